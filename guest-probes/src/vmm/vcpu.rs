//! [`Vcpu`]: creation in native 64-bit CPL0 (the set-up values come from `arch`), register
//! and MSR access, and the descriptions of where a guest stopped that errors carry.

use std::time::Instant;

use kvm_bindings::{kvm_msr_entry, kvm_regs, Msrs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::VcpuFd;

use super::arch;
use super::backend::{Backend, BackendKind};
use super::error::{GuestState, VmmError};
use super::host::host;
use super::run::{ExitStats, LastExit};
use super::vm::Vm;
use crate::payloads::entry;

/// A vCPU of a [`Vm`]. `Send`: create it anywhere, run it on the thread it is pinned to.
pub struct Vcpu {
    pub(super) vm: Vm,
    pub(super) fd: VcpuFd,
    pub(super) id: u32,
    pub stats: ExitStats,
    pub(super) last_exit: LastExit,
    pub(super) setup: String,
    pub(super) created: Instant,
    /// Address of the vCPU's kvm_run mapping (lives as long as `fd`).
    pub(super) run_addr: usize,
}

impl Vm {
    /// Creates vCPU `id` in native 64-bit CPL0: CPUID (supported table, APIC id = `id`),
    /// long-mode sregs, STAR/SFMASK, and the backend's `prepare_vcpu` (kvm_pvm: VIF page).
    pub fn create_vcpu(&self, id: u32) -> Result<Vcpu, VmmError> {
        self.create_vcpu_inner(id, true)
    }

    /// Like [`Vm::create_vcpu`] but without the backend's `prepare_vcpu` (on kvm_pvm: no VIF
    /// page, so the guest is emulated). For tests of the native check only.
    pub fn create_vcpu_without_backend_setup(&self, id: u32) -> Result<Vcpu, VmmError> {
        self.create_vcpu_inner(id, false)
    }

    fn create_vcpu_inner(&self, id: u32, backend_setup: bool) -> Result<Vcpu, VmmError> {
        let label = self.label();
        if id >= self.layout().vcpus() {
            return Err(VmmError::setup(
                label,
                format!("vCPU {id}: the VM is laid out for {} vCPUs", self.layout().vcpus()),
            ));
        }
        let kvm = host().kvm()?;
        let fd = self.fd().create_vcpu(u64::from(id)).map_err(|e| VmmError::ioctl(label, "KVM_CREATE_VCPU", e))?;
        let mut cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| VmmError::ioctl(label, "KVM_GET_SUPPORTED_CPUID", e))?;
        arch::set_apic_id(cpuid.as_mut_slice(), id);
        if self.views_enabled() {
            use super::views::uapi::{FEATURE_VMFUNC_VIEWS, KVM_CPUID_FEATURES};
            if !arch::set_feature_eax(cpuid.as_mut_slice(), KVM_CPUID_FEATURES, FEATURE_VMFUNC_VIEWS) {
                return Err(VmmError::setup(
                    label,
                    format!("vCPU {id}: KVM_GET_SUPPORTED_CPUID has no leaf {KVM_CPUID_FEATURES:#x} for the VMFUNC views bit"),
                ));
            }
        }
        fd.set_cpuid2(&cpuid).map_err(|e| VmmError::ioctl(label, "KVM_SET_CPUID2", e))?;
        let s = fd.get_sregs().map_err(|e| VmmError::ioctl(label, "KVM_GET_SREGS", e))?;
        fd.set_sregs(&arch::long_mode_sregs(s)).map_err(|e| VmmError::ioctl(label, "KVM_SET_SREGS", e))?;

        let mut fd = fd;
        let run_addr = fd.get_kvm_run() as *mut kvm_bindings::kvm_run as usize;
        let mut vcpu = Vcpu {
            vm: self.clone(),
            run_addr,
            fd,
            id,
            stats: ExitStats::default(),
            last_exit: LastExit::None,
            setup: String::new(),
            created: Instant::now(),
        };
        vcpu.set_msrs(&arch::syscall_msrs())?;
        vcpu.setup = if backend_setup {
            self.backend()
                .prepare_vcpu(&vcpu.fd, id)
                .map_err(|e| VmmError::setup(label, format!("vCPU {id}: {}: {e}", self.backend().name())))?
        } else {
            "backend setup skipped".into()
        };
        vcpu.set_entry(self.entry(entry::DONE)?, |_| {})?;
        Ok(vcpu)
    }
}

impl Vcpu {
    pub fn id(&self) -> u32 {
        self.id
    }
    pub fn vm(&self) -> &Vm {
        &self.vm
    }
    pub fn label(&self) -> &str {
        self.vm.label()
    }
    pub fn backend(&self) -> &'static dyn Backend {
        self.vm.backend()
    }
    /// The raw vCPU fd (LAPIC, MP state, events, ...).
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }
    /// What the backend did to make this vCPU native.
    pub fn setup(&self) -> &str {
        &self.setup
    }
    pub fn tsc_khz(&self) -> Result<u64, VmmError> {
        self.fd.get_tsc_khz().map(u64::from).map_err(|e| VmmError::ioctl(self.label(), "KVM_GET_TSC_KHZ", e))
    }

    pub fn set_msrs(&self, msrs: &[(u32, u64)]) -> Result<(), VmmError> {
        let entries: Vec<kvm_msr_entry> =
            msrs.iter().map(|&(index, data)| kvm_msr_entry { index, data, ..Default::default() }).collect();
        let list =
            Msrs::from_entries(&entries).map_err(|e| VmmError::setup(self.label(), format!("MSR list: {e:?}")))?;
        let n = self.fd.set_msrs(&list).map_err(|e| VmmError::ioctl(self.label(), "KVM_SET_MSRS", e))?;
        if n != msrs.len() {
            let failed = msrs[n];
            return Err(VmmError::setup(
                self.label(),
                format!("KVM_SET_MSRS refused MSR {:#x} = {:#x}", failed.0, failed.1),
            ));
        }
        Ok(())
    }

    /// Points the vCPU at `rip` with a fresh stack and RFLAGS = 2 ([`arch::entry_regs`]);
    /// `f` sets argument registers.
    pub fn set_entry(&mut self, rip: u64, f: impl FnOnce(&mut kvm_regs)) -> Result<(), VmmError> {
        let mut r = arch::entry_regs(self.id, rip);
        f(&mut r);
        self.fd.set_regs(&r).map_err(|e| VmmError::ioctl(self.label(), "KVM_SET_REGS", e))
    }

    /// Points the vCPU at the entry of `args` with its registers set ([`Vcpu::set_entry`]).
    pub fn enter(&mut self, args: &dyn crate::payloads::args::Args) -> Result<(), VmmError> {
        let rip = self.vm.entry(args.entry())?;
        self.set_entry(rip, |r| args.set(r))
    }

    pub fn regs(&self) -> Result<kvm_regs, VmmError> {
        self.fd.get_regs().map_err(|e| VmmError::ioctl(self.label(), "KVM_GET_REGS", e))
    }

    fn rip(&self) -> String {
        match self.fd.get_regs() {
            Ok(r) => format!("{:#x}", r.rip),
            Err(e) => format!("unknown (KVM_GET_REGS: {e})"),
        }
    }

    /// Describes the instruction at RIP when it explains a hang.
    fn hint_at_rip(&self) -> String {
        let Ok(r) = self.fd.get_regs() else { return String::new() };
        let mut b = [0u8; 3];
        if self.vm.read_bytes(r.rip, &mut b).is_err() {
            return String::new();
        }
        match b {
            [0x0f, 0x01, 0xc1] => format!(
                "; the instruction at RIP is vmcall{}",
                if self.backend().kind() == BackendKind::Pvm {
                    ", which is not kvm_pvm's hypercall (int $0x1b) and may be retried forever"
                } else {
                    ""
                }
            ),
            [0xeb, 0xfe, _] => "; the instruction at RIP is `jmp .` (an endless loop)".into(),
            _ => String::new(),
        }
    }

    /// The last exit, with KVM's details for an internal error.
    pub(super) fn describe_last_exit(&self) -> String {
        match self.last_exit {
            LastExit::InternalError => {
                // SAFETY: `run_addr` is this vCPU's kvm_run mapping, alive as long as `fd`;
                // this is a read-only copy taken between KVM_RUN calls (no concurrent write).
                let run = unsafe { &*(self.run_addr as *const kvm_bindings::kvm_run) };
                // SAFETY: `last_exit` is InternalError only right after a
                // KVM_EXIT_INTERNAL_ERROR, which selects the `internal` union member.
                let i = unsafe { run.__bindgen_anon_1.internal };
                let n = (i.ndata as usize).min(i.data.len());
                format!("KVM_EXIT_INTERNAL_ERROR suberror {} data {:x?}", i.suberror, &i.data[..n])
            }
            l => l.to_string(),
        }
    }

    /// Where the guest is now, for an error.
    pub fn state(&self) -> GuestState {
        GuestState { vcpu: self.id, rip: self.rip(), last_exit: self.describe_last_exit(), hint: self.hint_at_rip() }
    }

    /// A [`VmmError::GuestExit`] naming what went wrong and where the guest is.
    pub fn fail(&self, what: &str) -> VmmError {
        VmmError::GuestExit { vm: self.label().to_string(), what: what.to_string(), at: Box::new(self.state()) }
    }
}
