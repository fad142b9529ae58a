//! What differs between the KVM implementations behind `/dev/kvm`.
//!
//! Everything else in the VMM is backend-free. A backend says how a vCPU enters native
//! 64-bit CPL0 (`prepare_vcpu`), which instruction is a hypercall (`hypercall_insn`, patched
//! into the payloads), what an unknown hypercall returns, and whether VMFUNC exists.
//! `verify_native` (shared by all backends) runs the `vm.native.loop` payload and refuses
//! a guest that is being emulated.

mod amd;
mod intel;
mod pvm;

use crate::payloads::entry;
use std::fmt;
use std::path::Path;
use std::time::Instant;

use kvm_ioctls::{VcpuFd, VmFd};
use probe_api::{ProbeError, Support};

pub use amd::Amd;
pub use intel::Intel;
pub use pvm::Pvm;

use super::vm::Vcpu;

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
    /// Runs the native-loop payload on `vcpu` and fails when the guest is emulated.
    fn verify_native(&self, vcpu: &mut Vcpu, deadline: Instant) -> Result<NativeCheck, ProbeError> {
        verify_native(vcpu, deadline)
    }
}

/// The result of [`Backend::verify_native`].
#[derive(Clone, Debug)]
pub struct NativeCheck {
    /// Best (lowest) TSC cycles per `dec; jnz` iteration over a few short runs.
    pub cycles_per_iter: f64,
    pub iterations: u64,
}

/// Above this many cycles per `dec; jnz` iteration the guest is not running natively.
pub const MAX_NATIVE_CYCLES_PER_ITER: f64 = 10.0;

fn verify_native(vcpu: &mut Vcpu, deadline: Instant) -> Result<NativeCheck, ProbeError> {
    // 20k iterations per sample: ~20k cycles natively, ~300M cycles when every
    // instruction is emulated (still well inside any timeout).
    const ITERS: u64 = 20_000;
    const SAMPLES: u64 = 5;
    // Up to SAMPLES tries: a try that shared its CPU with a host thread can be slow, an
    // emulated guest is slow every time.
    let mut best = u64::MAX;
    for _ in 0..SAMPLES {
        let s = vcpu.run_batched_payload(entry::NATIVE_LOOP, 1, ITERS, deadline)?;
        best = best.min(s[0]);
        if best as f64 / ITERS as f64 <= MAX_NATIVE_CYCLES_PER_ITER {
            break;
        }
    }
    let cpi = best as f64 / ITERS as f64;
    if cpi.is_nan() || cpi > MAX_NATIVE_CYCLES_PER_ITER {
        return Err(ProbeError::Failed(format!(
            "{}: guest is being emulated ({cpi:.1} cycles/iteration of dec;jnz, limit {MAX_NATIVE_CYCLES_PER_ITER}): \
             refusing VM latencies (backend {}; on kvm_pvm each vCPU needs its VIF page MSR 0x4b564d10)",
            vcpu.label(),
            vcpu.backend().name()
        )));
    }
    Ok(NativeCheck { cycles_per_iter: cpi, iterations: ITERS })
}

fn module_loaded(name: &str) -> bool {
    Path::new("/sys/module").join(name).exists()
}

/// Detects which KVM module serves `/dev/kvm`. kvm_pvm wins when several are loaded:
/// on a host with kvm_pvm the hardware modules cannot be in use (no VMX/SVM).
pub fn detect() -> Result<&'static dyn Backend, String> {
    if !Path::new("/dev/kvm").exists() {
        return Err("no /dev/kvm".into());
    }
    if module_loaded("kvm_pvm") {
        Ok(&Pvm)
    } else if module_loaded("kvm_intel") {
        Ok(&Intel)
    } else if module_loaded("kvm_amd") {
        Ok(&Amd)
    } else {
        Err("/dev/kvm exists but none of kvm_pvm, kvm_intel, kvm_amd is in /sys/module".into())
    }
}

/// Which of the known KVM modules are loaded (for reports).
pub fn loaded_modules() -> Vec<&'static str> {
    ["kvm", "kvm_pvm", "kvm_intel", "kvm_amd"].into_iter().filter(|m| module_loaded(m)).collect()
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
