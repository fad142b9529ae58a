//! kvm_amd (SVM): ordinary 64-bit long mode at CPL0, hypercall `vmmcall`.
//!
//! Not exercised on the development machines (they run kvm_pvm).

use kvm_ioctls::VcpuFd;
use probe_api::Support;

use super::{Backend, BackendKind};

pub struct Amd;

impl Backend for Amd {
    fn kind(&self) -> BackendKind {
        BackendKind::Amd
    }
    fn prepare_vcpu(&self, _vcpu: &VcpuFd, _id: u32) -> Result<String, String> {
        Ok("long mode set through KVM_SET_SREGS; nothing backend specific".into())
    }
    fn hypercall_insn(&self) -> [u8; 3] {
        [0x0f, 0x01, 0xd9] // vmmcall
    }
    fn hypercall_name(&self) -> &'static str {
        "vmmcall"
    }
    fn unknown_hypercall_ret(&self) -> i64 {
        -1000 // -KVM_ENOSYS (include/uapi/linux/kvm_para.h)
    }
    fn vmfunc_support(&self) -> Support {
        Support::Unsupported("SVM (kvm_amd) has no VMFUNC instruction; EPTP switching is Intel-only".into())
    }
}
