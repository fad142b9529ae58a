//! What differs between the KVM implementations behind `/dev/kvm`.
//!
//! Everything else in the VMM is backend-free. A backend says how a vCPU enters native
//! 64-bit CPL0 (`prepare_vcpu`), which instruction is a hypercall (`hypercall_insn`, patched
//! into the payloads), what an unknown hypercall returns, and whether VMFUNC exists.
//! A leaf: it knows nothing of vCPU structs, images or runs (the native check that runs a
//! payload is `vmm::native`; which backend serves `/dev/kvm` is `vmm::host`).

mod amd;
mod intel;
mod pvm;

use std::fmt;

use kvm_ioctls::{VcpuFd, VmFd};
use probe_api::Support;

pub use amd::Amd;
pub use intel::Intel;
pub use pvm::Pvm;

/// Which KVM module provides `/dev/kvm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    Pvm,
    Intel,
    Amd,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Pvm => "kvm_pvm",
            BackendKind::Intel => "kvm_intel",
            BackendKind::Amd => "kvm_amd",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The per-backend part of the VMM.
pub trait Backend: Send + Sync + 'static {
    fn kind(&self) -> BackendKind;
    fn name(&self) -> &'static str {
        self.kind().name()
    }
    /// VM-wide setup after KVM_CREATE_VM, before any vCPU exists.
    fn prepare_vm(&self, _vm: &VmFd) -> Result<(), String> {
        Ok(())
    }
    /// Makes vCPU `id` run natively in 64-bit mode at CPL0 once the common long-mode sregs
    /// (set by the VMM) are in place. Returns a one-line description of what it did.
    fn prepare_vcpu(&self, vcpu: &VcpuFd, id: u32) -> Result<String, String>;
    /// The 3-byte instruction the payloads' hypercall sites are patched with.
    fn hypercall_insn(&self) -> [u8; 3];
    /// Assembly text of the hypercall, for reports.
    fn hypercall_name(&self) -> &'static str;
    /// What a hypercall with an unknown number returns in RAX.
    fn unknown_hypercall_ret(&self) -> i64;
    /// Whether a guest can switch EPT views with VMFUNC leaf 0, with the specific reason.
    fn vmfunc_support(&self) -> Support;
}

/// The backend of a kind.
pub fn of(kind: BackendKind) -> &'static dyn Backend {
    match kind {
        BackendKind::Pvm => &Pvm,
        BackendKind::Intel => &Intel,
        BackendKind::Amd => &Amd,
    }
}

/// Reads one MSR of CPU 0 through the msr driver, if it is available.
pub(crate) fn read_host_msr(index: u32) -> Result<u64, String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open("/dev/cpu/0/msr")
        .map_err(|e| format!("cannot open /dev/cpu/0/msr ({e}; is the msr module loaded?)"))?;
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, u64::from(index)).map_err(|e| format!("rdmsr {index:#x} failed: {e}"))?;
    Ok(u64::from_le_bytes(b))
}

/// Whether the host CPU reports VMX (CPUID.1:ECX bit 5) and SVM (CPUID.80000001h:ECX bit 2).
pub(crate) fn host_vmx_svm() -> (bool, bool) {
    let c = raw_cpuid::CpuId::new();
    let vmx = c.get_feature_info().map(|f| f.has_vmx()).unwrap_or(false);
    let svm = c.get_extended_processor_and_feature_identifiers().map(|f| f.has_svm()).unwrap_or(false);
    (vmx, svm)
}

/// Whether the host itself runs under a hypervisor (CPUID.1:ECX bit 31).
pub(crate) fn host_is_guest() -> bool {
    raw_cpuid::CpuId::new().get_feature_info().map(|f| f.has_hypervisor()).unwrap_or(false)
}
