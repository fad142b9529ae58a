//! [`KvmHost`]: the one place that probes `/dev/kvm` and the KVM modules.
//!
//! The VMM, the VM probes' support checks, the harness fingerprint and its TSC-rate
//! cross-check all ask [`host()`]: which backend serves `/dev/kvm` (one preference order,
//! [`choose_backend`]), whether it opens, its API version, the capabilities the probes
//! depend on and KVM's TSC rate. `/dev/kvm` is opened once per process.

use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

use kvm_ioctls::{Cap, Kvm};

use super::backend::{self, Backend, BackendKind};
use super::error::VmmError;

/// The KVM backend modules, in the order [`choose_backend`] prefers them.
pub const BACKEND_MODULES: [&str; 3] = ["kvm_pvm", "kvm_intel", "kvm_amd"];

/// Capabilities the VM probes depend on (KVM_CHECK_EXTENSION).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    /// KVM_CAP_NR_VCPUS (recommended maximum).
    pub nr_vcpus: usize,
    /// KVM_CAP_MAX_VCPUS.
    pub max_vcpus: usize,
    pub irqchip: bool,
    pub irqfd: bool,
    pub irq_routing: bool,
    pub signal_msi: bool,
    pub ioeventfd: bool,
    pub split_irqchip: bool,
    /// KVM_CAP_X86_DISABLE_EXITS: the raw answer (a bit mask; negative on error).
    pub disable_exits: i32,
    /// KVM_CAP_GET_TSC_KHZ.
    pub get_tsc_khz: bool,
}

/// What this host's KVM is. Built once by [`host()`].
pub struct KvmHost {
    dev_present: bool,
    kvm: Result<Kvm, String>,
    api_version: Option<i32>,
    modules: Vec<&'static str>,
    live: Vec<&'static str>,
    backend: Result<BackendKind, String>,
    backend_note: Option<String>,
    caps: Caps,
    tsc_khz: OnceLock<Result<u64, String>>,
}

/// Which backend serves `/dev/kvm`, from the backend modules `present` in /sys/module and
/// those of them whose initstate is `live` (loaded as modules rather than built in).
/// kvm_pvm wins when present: on a host with kvm_pvm the hardware modules cannot be in
/// use (no VMX/SVM). Otherwise the one live module wins; otherwise the first present of
/// kvm_intel, kvm_amd, with a note on the ambiguity.
pub fn choose_backend(present: &[&str], live: &[&str]) -> (Option<BackendKind>, Option<String>) {
    let kind = |m: &str| match m {
        "kvm_pvm" => Some(BackendKind::Pvm),
        "kvm_intel" => Some(BackendKind::Intel),
        "kvm_amd" => Some(BackendKind::Amd),
        _ => None,
    };
    let known: Vec<&str> = BACKEND_MODULES.iter().copied().filter(|m| present.contains(m)).collect();
    if known.contains(&"kvm_pvm") {
        return (Some(BackendKind::Pvm), None);
    }
    let live: Vec<&str> = known.iter().copied().filter(|m| live.contains(m)).collect();
    match (live.as_slice(), known.as_slice()) {
        ([one], _) => (kind(one), None),
        (_, []) => (None, None),
        (_, [one]) => (kind(one), None),
        (_, [first, ..]) => {
            (kind(first), Some(format!("several backend modules present ({}); using {first}", known.join(", "))))
        }
    }
}

fn module_loaded(name: &str) -> bool {
    Path::new("/sys/module").join(name).exists()
}

fn module_live(name: &str) -> bool {
    std::fs::read_to_string(Path::new("/sys/module").join(name).join("initstate")).is_ok_and(|s| s.trim() == "live")
}

impl KvmHost {
    fn probe() -> KvmHost {
        let dev_present = Path::new("/dev/kvm").exists();
        let kvm = if dev_present {
            Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))
        } else {
            Err("no /dev/kvm".to_string())
        };
        let modules: Vec<&'static str> = BACKEND_MODULES.into_iter().filter(|m| module_loaded(m)).collect();
        let live: Vec<&'static str> = modules.iter().copied().filter(|m| module_live(m)).collect();
        let (kind, backend_note) = choose_backend(&modules, &live);
        let backend = match (dev_present, kind) {
            (false, _) => Err("no /dev/kvm".to_string()),
            (true, Some(k)) => Ok(k),
            (true, None) => Err("/dev/kvm exists but none of kvm_pvm, kvm_intel, kvm_amd is in /sys/module".into()),
        };
        let (api_version, caps) = match &kvm {
            Ok(k) => (
                Some(k.get_api_version()),
                Caps {
                    nr_vcpus: k.get_nr_vcpus(),
                    max_vcpus: k.get_max_vcpus(),
                    irqchip: k.check_extension(Cap::Irqchip),
                    irqfd: k.check_extension(Cap::Irqfd),
                    irq_routing: k.check_extension(Cap::IrqRouting),
                    signal_msi: k.check_extension(Cap::SignalMsi),
                    ioeventfd: k.check_extension(Cap::Ioeventfd),
                    split_irqchip: k.check_extension(Cap::SplitIrqchip),
                    disable_exits: k.check_extension_raw(libc::c_ulong::from(kvm_bindings::KVM_CAP_X86_DISABLE_EXITS)),
                    get_tsc_khz: k.check_extension(Cap::GetTscKhz),
                },
            ),
            Err(_) => (None, Caps::default()),
        };
        KvmHost { dev_present, kvm, api_version, modules, live, backend, backend_note, caps, tsc_khz: OnceLock::new() }
    }

    pub fn dev_present(&self) -> bool {
        self.dev_present
    }
    /// The process-wide `/dev/kvm` handle, or why there is none.
    pub fn kvm(&self) -> Result<&Kvm, VmmError> {
        self.kvm.as_ref().map_err(|e| VmmError::Unsupported(e.clone()))
    }
    /// Why `/dev/kvm` exists but did not open (None when it opened or is absent).
    pub fn open_error(&self) -> Option<&str> {
        match &self.kvm {
            Err(e) if self.dev_present => Some(e),
            _ => None,
        }
    }
    pub fn api_version(&self) -> Option<i32> {
        self.api_version
    }
    /// Backend modules present in /sys/module, in preference order.
    pub fn modules(&self) -> &[&'static str] {
        &self.modules
    }
    /// Those of [`KvmHost::modules`] loaded as modules (initstate `live`).
    pub fn live_modules(&self) -> &[&'static str] {
        &self.live
    }
    /// The backend that serves `/dev/kvm`.
    pub fn backend_kind(&self) -> Result<BackendKind, VmmError> {
        self.backend.clone().map_err(VmmError::Unsupported)
    }
    /// The VMM side of [`KvmHost::backend_kind`].
    pub fn backend(&self) -> Result<&'static dyn Backend, VmmError> {
        self.backend_kind().map(backend::of)
    }
    /// Why the backend was chosen among several, when it was.
    pub fn backend_note(&self) -> Option<&str> {
        self.backend_note.as_deref()
    }
    pub fn caps(&self) -> &Caps {
        &self.caps
    }
    /// KVM_GET_TSC_KHZ of a scratch vCPU (measured once).
    pub fn tsc_khz(&self) -> Result<u64, String> {
        self.tsc_khz
            .get_or_init(|| {
                let kvm = self.kvm.as_ref().map_err(Clone::clone)?;
                let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
                let vcpu = vm.create_vcpu(0).map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
                vcpu.get_tsc_khz().map(u64::from).map_err(|e| format!("KVM_GET_TSC_KHZ: {e}"))
            })
            .clone()
    }
}

impl fmt::Debug for KvmHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvmHost")
            .field("dev_present", &self.dev_present)
            .field("open", &self.kvm.as_ref().map(|_| ()))
            .field("api_version", &self.api_version)
            .field("modules", &self.modules)
            .field("backend", &self.backend)
            .field("caps", &self.caps)
            .finish()
    }
}

/// This host's KVM (probed on first use).
pub fn host() -> &'static KvmHost {
    static HOST: OnceLock<KvmHost> = OnceLock::new();
    HOST.get_or_init(KvmHost::probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_pvm_wins_and_a_live_module_beats_a_built_in_one() {
        assert_eq!(choose_backend(&["kvm_intel", "kvm_pvm"], &["kvm_intel"]).0, Some(BackendKind::Pvm));
        assert_eq!(choose_backend(&["kvm_intel", "kvm_amd"], &["kvm_amd"]).0, Some(BackendKind::Amd));
        assert_eq!(choose_backend(&["kvm_amd"], &[]).0, Some(BackendKind::Amd));
        let (k, note) = choose_backend(&["kvm_amd", "kvm_intel"], &[]);
        assert_eq!(k, Some(BackendKind::Intel));
        assert!(note.unwrap().contains("kvm_intel, kvm_amd"));
        assert_eq!(choose_backend(&["kvm"], &["kvm"]), (None, None));
    }
}
