//! [`VmmError`]: what failed in the VMM, by kind, converted into a [`ProbeError`] at the
//! probe boundary (`From`), so that a probe's `?` keeps the message and the category
//! (unsupported, timeout, failure).

use std::time::Duration;

use probe_api::ProbeError;

/// Where a guest stopped: for errors that name a vCPU's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestState {
    pub vcpu: u32,
    /// `0x...`, or why KVM_GET_REGS failed.
    pub rip: String,
    /// The last exit as text (`KVM_EXIT_IO out port 0xf0`, ...).
    pub last_exit: String,
    /// What the instruction at RIP suggests ("; the instruction at RIP is ..."), or "".
    pub hint: String,
}

/// A VMM failure. Every variant names the VM (its label: the probe or test name).
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The host cannot do it (no /dev/kvm, a capability KVM refuses).
    #[error("{0}")]
    Unsupported(String),
    /// A KVM ioctl failed.
    #[error("{vm}: {ioctl}: {errno}")]
    Ioctl { vm: String, ioctl: String, errno: vmm_sys_util::errno::Error },
    /// Guest memory could not be read, written or mapped.
    #[error("{vm}: guest memory at {gpa:#x}: {what}")]
    Memory { vm: String, gpa: u64, what: String },
    /// The guest stopped in a way the run does not accept (a fatal or unexpected exit, a
    /// guest-reported error, a wrong sample count).
    #[error("{vm}: {what} at RIP {} (vCPU {}, last exit: {}){}", at.rip, at.vcpu, at.last_exit, at.hint)]
    GuestExit { vm: String, what: String, at: Box<GuestState> },
    /// The watchdog stopped a guest that did not finish by its deadline.
    #[error(
        "{vm}: guest did not finish: the watchdog stopped vCPU {} at RIP {} after {after:?} in this run call \
         (last exit: {}; {exits} exits since the last stats reset){}",
        at.vcpu, at.rip, at.last_exit, at.hint
    )]
    Timeout { vm: String, at: Box<GuestState>, after: Duration, exits: u64, since_created: Duration },
    /// Set-up that is neither an ioctl nor guest memory (layout, backend preparation).
    #[error("{vm}: {what}")]
    Setup { vm: String, what: String },
    /// A VM worker process died (exit status or signal).
    #[error("{group}: VM worker {worker} (pid {pid}) died: {how}")]
    WorkerDied { group: String, worker: String, pid: i32, how: String },
    /// A VM worker reported an error (its own VMM error, as text).
    #[error("{group}: VM worker {worker}: {what}")]
    Worker { group: String, worker: String, what: String, timeout: bool },
    /// A VM worker process did not answer by its deadline.
    #[error("{group}: VM worker {worker} (pid {pid}) hung: {what}")]
    WorkerHung { group: String, worker: String, pid: i32, what: String },
    /// The run was interrupted (Ctrl-C, SIGTERM) and the workers torn down.
    #[error("{group}: interrupted; VM workers torn down")]
    Interrupted { group: String },
}

impl VmmError {
    pub fn ioctl(vm: &str, ioctl: impl Into<String>, errno: vmm_sys_util::errno::Error) -> VmmError {
        VmmError::Ioctl { vm: vm.to_string(), ioctl: ioctl.into(), errno }
    }
    pub fn memory(vm: &str, gpa: u64, what: impl std::fmt::Display) -> VmmError {
        VmmError::Memory { vm: vm.to_string(), gpa, what: what.to_string() }
    }
    pub fn setup(vm: &str, what: impl Into<String>) -> VmmError {
        VmmError::Setup { vm: vm.to_string(), what: what.into() }
    }
    /// The OS error of the last failed libc call, for set-up steps outside KVM.
    pub fn last_os(vm: &str, what: &str) -> VmmError {
        VmmError::setup(vm, format!("{what}: {}", std::io::Error::last_os_error()))
    }
}

impl From<VmmError> for ProbeError {
    fn from(e: VmmError) -> ProbeError {
        match e {
            VmmError::Unsupported(r) => ProbeError::Unsupported(r),
            VmmError::Timeout { since_created, .. } => ProbeError::Timeout(since_created, e.to_string()),
            VmmError::Worker { timeout: true, .. } | VmmError::WorkerHung { .. } => {
                ProbeError::Timeout(Duration::ZERO, e.to_string())
            }
            e @ VmmError::Interrupted { .. } => ProbeError::Interrupted(e.to_string()),
            e => ProbeError::Failed(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Box<GuestState> {
        Box::new(GuestState { vcpu: 1, rip: "0x10040".into(), last_exit: "KVM_EXIT_HLT".into(), hint: String::new() })
    }

    #[test]
    fn messages_name_the_vm_the_ioctl_the_rip_and_the_exit() {
        let e = VmmError::ioctl("vm.x", "KVM_SET_SREGS", vmm_sys_util::errno::Error::new(libc::EINVAL));
        assert!(e.to_string().starts_with("vm.x: KVM_SET_SREGS: "), "{e}");
        let e = VmmError::GuestExit { vm: "vm.x".into(), what: "fatal exit KVM_EXIT_SHUTDOWN".into(), at: at() };
        assert_eq!(
            e.to_string(),
            "vm.x: fatal exit KVM_EXIT_SHUTDOWN at RIP 0x10040 (vCPU 1, last exit: KVM_EXIT_HLT)"
        );
        let e = VmmError::WorkerDied {
            group: "g".into(),
            worker: "vm1".into(),
            pid: 7,
            how: "killed by signal 9 (SIGKILL)".into(),
        };
        assert_eq!(e.to_string(), "g: VM worker vm1 (pid 7) died: killed by signal 9 (SIGKILL)");
    }

    #[test]
    fn probe_errors_keep_the_category() {
        assert!(matches!(ProbeError::from(VmmError::Unsupported("no /dev/kvm".into())), ProbeError::Unsupported(_)));
        let t = VmmError::Timeout {
            vm: "v".into(),
            at: at(),
            after: Duration::from_millis(300),
            exits: 3,
            since_created: Duration::from_secs(1),
        };
        match ProbeError::from(t) {
            ProbeError::Timeout(d, m) => {
                assert_eq!(d, Duration::from_secs(1));
                assert!(m.contains("RIP 0x10040") && m.contains("last exit: KVM_EXIT_HLT"), "{m}");
            }
            e => panic!("{e}"),
        }
        assert!(matches!(ProbeError::from(VmmError::memory("v", 0x10, "out of range")), ProbeError::Failed(_)));
    }
}
