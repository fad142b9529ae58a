//! kvm_intel (VMX): ordinary 64-bit long mode at CPL0, hypercall `vmcall`.
//!
//! Not exercised on the development machines (they run kvm_pvm); run in Bochs by the
//! emulated tier (`emulated/`), with the stock module and with the kvm-patch module, whose
//! VMFUNC views this backend reports through `vmfunc_views` ([`views`]).

use kvm_ioctls::{VcpuFd, VmFd};
use probe_api::Support;

use super::{host_vmx_svm, read_host_msr, Backend, BackendKind};
use crate::vmm::views;

pub struct Intel;

/// IA32_VMX_PROCBASED_CTLS (allowed-1 settings in bits 63:32).
const MSR_VMX_PROCBASED_CTLS: u32 = 0x482;
/// IA32_VMX_PROCBASED_CTLS2 (allowed-1 settings in bits 63:32).
const MSR_VMX_PROCBASED_CTLS2: u32 = 0x48b;
/// IA32_VMX_VMFUNC: bit 0 = EPTP switching.
const MSR_VMX_VMFUNC: u32 = 0x491;

impl Backend for Intel {
    fn kind(&self) -> BackendKind {
        BackendKind::Intel
    }
    fn prepare_vm(&self, vm: &VmFd) -> Result<(), String> {
        // Needed by VMX without unrestricted guest; harmless otherwise. Three pages just
        // below 4 GiB, far from anything the payloads touch.
        vm.set_tss_address(0xfffb_d000).map_err(|e| format!("KVM_SET_TSS_ADDR: {e}"))
    }
    fn prepare_vcpu(&self, _vcpu: &VcpuFd, _id: u32) -> Result<String, String> {
        Ok("long mode set through KVM_SET_SREGS; nothing backend specific".into())
    }
    fn hypercall_insn(&self) -> [u8; 3] {
        [0x0f, 0x01, 0xc1] // vmcall
    }
    fn hypercall_name(&self) -> &'static str {
        "vmcall"
    }
    fn unknown_hypercall_ret(&self) -> i64 {
        -1000 // -KVM_ENOSYS (include/uapi/linux/kvm_para.h)
    }
    fn vmfunc_support(&self) -> Support {
        match views::host_support(&views::module_param(), &cpu_vmfunc()) {
            Ok(()) => Support::Supported,
            Err(reason) => Support::Unsupported(reason),
        }
    }
}

/// What the CPU's VMX capability MSRs say about VMFUNC EPTP switching (for reasons only:
/// the patched module decides, and says so in its parameter).
fn cpu_vmfunc() -> String {
    let (vmx, _) = host_vmx_svm();
    if !vmx {
        return "CPUID.1:ECX.VMX = 0 on this host".into();
    }
    match (read_host_msr(MSR_VMX_PROCBASED_CTLS), read_host_msr(MSR_VMX_PROCBASED_CTLS2), read_host_msr(MSR_VMX_VMFUNC))
    {
        (Ok(ctls), Ok(ctls2), Ok(vmfunc)) => {
            let secondary = ctls >> 63 & 1 == 1;
            let enable_vmfunc = ctls2 >> (32 + 13) & 1 == 1;
            let eptp_switching = vmfunc & 1 == 1;
            if secondary && enable_vmfunc && eptp_switching {
                "the CPU supports VMFUNC leaf 0 (MSR 0x48B bit 45, MSR 0x491 bit 0)".into()
            } else {
                format!(
                    "the CPU lacks VMFUNC EPTP switching (secondary controls {secondary}, \
                     MSR 0x48B enable-VM-functions {enable_vmfunc}, MSR 0x491 EPTP switching {eptp_switching})"
                )
            }
        }
        (a, b, c) => {
            let err = [a.err(), b.err(), c.err()].into_iter().flatten().next().unwrap_or_default();
            format!("VMX capability MSRs unreadable ({err})")
        }
    }
}
