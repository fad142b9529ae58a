//! kvm_pvm: the VMX-less nested host of the development machines.
//!
//! Established by experiment (see shared/docs/kvm-backends.md): guest CPL0 code runs in
//! hardware ring 3, natively, only once the VMM has registered a zeroed 4 KiB VIF page per
//! vCPU through MSR 0x4b564d10 (`gpa | 0x400`; bit 9 is refused). Page tables need the U/S
//! bit at every level (the common identity map sets it for every backend). The hypercall
//! is `int $0x1b` (number in RAX). shared/docs says `vmcall` is retried forever by the
//! emulator; on the machine this was written on it returned -1 (-KVM_EPERM) for every
//! number instead (tests/vmm.rs accepts either, and the watchdog covers the hang).

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::VcpuFd;
use probe_api::Support;

use super::{host_vmx_svm, Backend, BackendKind};
use crate::vmm::layout;

pub struct Pvm;

/// MSR that registers the VIF page.
pub const MSR_PVM_VIF: u32 = 0x4b56_4d10;
/// Flag ORed into the VIF page address.
pub const VIF_ENABLE: u64 = 0x400;

impl Backend for Pvm {
    fn kind(&self) -> BackendKind {
        BackendKind::Pvm
    }
    fn prepare_vcpu(&self, vcpu: &VcpuFd, id: u32) -> Result<String, String> {
        if id >= layout::MAX_VCPUS {
            return Err(format!("vCPU {id}: only {} VIF pages are laid out", layout::MAX_VCPUS));
        }
        let value = layout::vif_page(id) | VIF_ENABLE;
        let msrs = Msrs::from_entries(&[kvm_msr_entry { index: MSR_PVM_VIF, data: value, ..Default::default() }])
            .map_err(|e| format!("MSR list: {e:?}"))?;
        match vcpu.set_msrs(&msrs) {
            Ok(1) => Ok(format!("VIF page MSR {MSR_PVM_VIF:#x} = {value:#x}")),
            Ok(n) => Err(format!("KVM_SET_MSRS({MSR_PVM_VIF:#x} = {value:#x}) set {n} of 1 MSRs: this kvm_pvm does not take the VIF page")),
            Err(e) => Err(format!("KVM_SET_MSRS({MSR_PVM_VIF:#x}): {e}")),
        }
    }
    fn hypercall_insn(&self) -> [u8; 3] {
        [0xcd, 0x1b, 0x90] // int $0x1b; nop
    }
    fn hypercall_name(&self) -> &'static str {
        "int $0x1b"
    }
    fn unknown_hypercall_ret(&self) -> i64 {
        -38 // -ENOSYS, measured on kvm_pvm
    }
    fn vmfunc_support(&self) -> Support {
        let (vmx, _) = host_vmx_svm();
        Support::Unsupported(format!(
            "kvm_pvm has no VMFUNC: guests run under PVM's software virtualization without EPT views \
             (host CPUID.1:ECX.VMX = {}); the software fallback is vm.view.hypercall",
            u8::from(vmx)
        ))
    }
}
