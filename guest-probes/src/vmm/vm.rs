//! `Vm`, `Vcpu`, memory and the run loop. See the module documentation of `vmm`.

use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use kvm_bindings::{kvm_msr_entry, kvm_regs, kvm_segment, kvm_userspace_memory_region, Msrs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use probe_api::ProbeError;
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
    MemoryRegionAddress, MmapRegion,
};

use super::backend::{self, Backend};
use super::layout;
use super::watchdog;
use crate::payloads::{entry, Entry, Image};

/// The process-wide `/dev/kvm` handle (opened once; never closed).
pub fn kvm() -> Result<&'static Kvm, ProbeError> {
    static KVM: OnceLock<Result<Kvm, String>> = OnceLock::new();
    KVM.get_or_init(|| Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}")))
        .as_ref()
        .map_err(|e| ProbeError::Unsupported(e.clone()))
}

/// The detected backend (cached).
pub fn detected_backend() -> Result<&'static dyn Backend, ProbeError> {
    static B: OnceLock<Result<&'static dyn Backend, String>> = OnceLock::new();
    (*B.get_or_init(backend::detect)).clone().map_err(ProbeError::Unsupported)
}

fn image() -> Result<&'static Image, ProbeError> {
    static IMG: OnceLock<Result<Image, String>> = OnceLock::new();
    let b = detected_backend()?;
    IMG.get_or_init(|| Image::build(b)).as_ref().map_err(|e| ProbeError::Failed(format!("guest image: {e}")))
}

fn kvm_err(label: &str, what: &str, e: impl fmt::Display) -> ProbeError {
    ProbeError::Failed(format!("{label}: {what}: {e}"))
}

/// Memory shared between VMs: one memfd mapped once (MAP_SHARED) in this process; every VM
/// that adds it gets a memslot on the same host address, so all of them (and the host) see
/// the same bytes.
#[derive(Clone)]
pub struct SharedMemory {
    region: Arc<MmapRegion>,
}

impl SharedMemory {
    pub fn new(size: usize) -> Result<SharedMemory, ProbeError> {
        // SAFETY: memfd_create with a valid NUL-terminated name.
        let fd = unsafe { libc::memfd_create(c"ivbench-shared".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(ProbeError::last_os("memfd_create"));
        }
        // SAFETY: fd was just created and is owned here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: valid fd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) } != 0 {
            return Err(ProbeError::last_os("ftruncate(memfd)"));
        }
        let file = std::fs::File::from(fd);
        let region = MmapRegion::from_file(FileOffset::new(file, 0), size)
            .map_err(|e| ProbeError::Failed(format!("mmap(memfd): {e}")))?;
        Ok(SharedMemory { region: Arc::new(region) })
    }
    pub fn size(&self) -> usize {
        self.region.size()
    }
    pub fn host_addr(&self) -> *mut u8 {
        self.region.as_ptr()
    }
}

/// A memslot beyond slot 0 (shared memory, the protected view, ...).
struct ExtraSlot {
    slot: u32,
    region: Arc<GuestRegionMmap>,
    mapped: bool,
}

struct VmInner {
    // Field order is drop order: the VM fd goes before the memory it maps.
    fd: VmFd,
    label: String,
    backend: &'static dyn Backend,
    memory: GuestMemoryMmap,
    extra: Mutex<Vec<ExtraSlot>>,
    image: &'static Image,
}

/// A VM: identity-mapped main memory in slot 0 with all payloads loaded, plus optional
/// extra memslots. Cheap to clone (shared handle); every `Vcpu` holds one.
#[derive(Clone)]
pub struct Vm {
    inner: Arc<VmInner>,
}

impl Vm {
    /// Creates a VM for the probe (or test) `label`: KVM_CREATE_VM, slot 0 of
    /// [`layout::MEM_SIZE`] bytes at GPA 0, identity page tables (1 GiB, 2 MiB pages, U/S at
    /// every level), the guest image at [`layout::IMAGE`], backend VM setup.
    pub fn new(label: &str) -> Result<Vm, ProbeError> {
        let kvm = kvm()?;
        let backend = detected_backend()?;
        let image = image()?;
        let fd = kvm.create_vm().map_err(|e| kvm_err(label, "KVM_CREATE_VM", e))?;
        // MAP_SHARED anonymous memory, like the C prototype: on kvm_pvm every trap into KVM
        // (even an in-kernel hypercall) measured ~1,100 cycles slower with the MAP_PRIVATE
        // anonymous memory that vm-memory allocates by default (10.5k vs 11.6k cycles
        // minimum for vm.hypercall.null, repeated A/B runs).
        let region = vm_memory::mmap::MmapRegionBuilder::new(layout::MEM_SIZE)
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE)
            .build()
            .map_err(|e| ProbeError::Failed(format!("{label}: guest memory: {e}")))?;
        let region = GuestRegionMmap::new(region, GuestAddress(0))
            .ok_or_else(|| ProbeError::Failed(format!("{label}: guest memory region")))?;
        let memory = GuestMemoryMmap::from_regions(vec![region])
            .map_err(|e| ProbeError::Failed(format!("{label}: guest memory: {e}")))?;
        let host = memory.get_host_address(GuestAddress(0)).map_err(|e| ProbeError::Failed(format!("{label}: {e}")))?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: layout::MEM_SIZE as u64,
            userspace_addr: host as u64,
        };
        // SAFETY: the region is owned by VmInner, which drops the VM fd first.
        unsafe { fd.set_user_memory_region(region) }.map_err(|e| kvm_err(label, "KVM_SET_USER_MEMORY_REGION(slot 0)", e))?;
        backend.prepare_vm(&fd).map_err(|e| ProbeError::Failed(format!("{label}: {}: {e}", backend.name())))?;
        let vm = Vm {
            inner: Arc::new(VmInner {
                fd,
                label: label.to_string(),
                backend,
                memory,
                extra: Mutex::new(Vec::new()),
                image,
            }),
        };
        vm.write_page_tables()?;
        vm.write_bytes(layout::IMAGE, &image.bytes)?;
        Ok(vm)
    }

    fn write_page_tables(&self) -> Result<(), ProbeError> {
        // U/S (bit 2) at every level: kvm_pvm runs guest CPL0 in hardware ring 3 and needs it;
        // the syscall probe's user mode needs it on every backend. No SMEP/SMAP in CR4.
        const TABLE: u64 = 0x7; // present | writable | user
        const LEAF_2M: u64 = 0x87; // present | writable | user | PS
        self.write_u64(layout::PML4, layout::PDPT | TABLE)?;
        self.write_u64(layout::PDPT, layout::PD0 | TABLE)?;
        self.write_u64(layout::PDPT + 3 * 8, layout::PD3 | TABLE)?;
        let pd: Vec<u8> = (0..512u64).flat_map(|i| ((i << 21) | LEAF_2M).to_le_bytes()).collect();
        self.write_bytes(layout::PD0, &pd)
    }

    pub fn label(&self) -> &str {
        &self.inner.label
    }
    pub fn backend(&self) -> &'static dyn Backend {
        self.inner.backend
    }
    /// The raw VM fd, for what the VMM does not wrap yet (irqchip, MSI routing, irqfd, ...).
    pub fn fd(&self) -> &VmFd {
        &self.inner.fd
    }
    /// Guest main memory (slot 0), host view.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.inner.memory
    }
    /// GPA of a payload entry point (see `payloads`).
    pub fn entry(&self, e: Entry) -> Result<u64, ProbeError> {
        self.inner
            .image
            .entry(e)
            .ok_or_else(|| ProbeError::Failed(format!("{}: no payload entry `{e}`", self.label())))
    }

    fn mem_err(&self, gpa: u64, e: impl fmt::Display) -> ProbeError {
        ProbeError::Failed(format!("{}: guest memory at {gpa:#x}: {e}", self.label()))
    }
    pub fn write_bytes(&self, gpa: u64, data: &[u8]) -> Result<(), ProbeError> {
        self.inner.memory.write_slice(data, GuestAddress(gpa)).map_err(|e| self.mem_err(gpa, e))
    }
    pub fn read_bytes(&self, gpa: u64, data: &mut [u8]) -> Result<(), ProbeError> {
        self.inner.memory.read_slice(data, GuestAddress(gpa)).map_err(|e| self.mem_err(gpa, e))
    }
    pub fn write_u64(&self, gpa: u64, v: u64) -> Result<(), ProbeError> {
        self.inner.memory.write_obj(v, GuestAddress(gpa)).map_err(|e| self.mem_err(gpa, e))
    }
    pub fn read_u64(&self, gpa: u64) -> Result<u64, ProbeError> {
        self.inner.memory.read_obj(GuestAddress(gpa)).map_err(|e| self.mem_err(gpa, e))
    }
    /// Reads `n` u64 words from main memory.
    pub fn read_u64s(&self, gpa: u64, n: usize) -> Result<Vec<u64>, ProbeError> {
        let mut bytes = vec![0u8; n * 8];
        self.read_bytes(gpa, &mut bytes)?;
        Ok(bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect())
    }
    /// Fills `n` u64 words of main memory with `v`.
    pub fn fill_u64s(&self, gpa: u64, n: usize, v: u64) -> Result<(), ProbeError> {
        let bytes: Vec<u8> = std::iter::repeat_n(v.to_le_bytes(), n).flatten().collect();
        self.write_bytes(gpa, &bytes)
    }

    /// Adds memslot `slot` at `gpa` backed by `region` (mapped into the guest at once when
    /// `mapped`). The guest page tables already cover the first GiB.
    fn add_region(&self, slot: u32, gpa: u64, region: Arc<MmapRegion>, mapped: bool) -> Result<(), ProbeError> {
        if slot == 0 {
            return Err(ProbeError::Failed(format!("{}: slot 0 is the main memory", self.label())));
        }
        let region = Arc::new(
            GuestRegionMmap::with_arc(region, GuestAddress(gpa))
                .ok_or_else(|| ProbeError::Failed(format!("{}: region at {gpa:#x} overflows", self.label())))?,
        );
        let mut extra = self.inner.extra.lock().unwrap_or_else(|e| e.into_inner());
        if extra.iter().any(|s| s.slot == slot) {
            return Err(ProbeError::Failed(format!("{}: memslot {slot} already exists", self.label())));
        }
        extra.push(ExtraSlot { slot, region, mapped: false });
        drop(extra);
        if mapped {
            self.set_slot_mapped(slot, true)?;
        }
        Ok(())
    }

    /// Maps `shared` into this VM as memslot `slot` at `gpa` (several VMs may map the same
    /// `SharedMemory`, at the same or different GPAs).
    pub fn add_shared(&self, slot: u32, gpa: u64, shared: &SharedMemory) -> Result<(), ProbeError> {
        self.add_region(slot, gpa, shared.region.clone(), true)
    }

    /// Adds a private anonymous memslot (e.g. the protected view), initially unmapped.
    pub fn add_private_slot(&self, slot: u32, gpa: u64, size: usize) -> Result<(), ProbeError> {
        let region = MmapRegion::new(size).map_err(|e| ProbeError::Failed(format!("{}: mmap: {e}", self.label())))?;
        self.add_region(slot, gpa, Arc::new(region), false)
    }

    /// Makes an extra memslot visible to the guest (KVM_SET_USER_MEMORY_REGION with its
    /// size) or removes it (size 0: accesses then exit as KVM_EXIT_MMIO). The host view
    /// (`slot_write` / `slot_read`) is unaffected.
    pub fn set_slot_mapped(&self, slot: u32, mapped: bool) -> Result<(), ProbeError> {
        let mut extra = self.inner.extra.lock().unwrap_or_else(|e| e.into_inner());
        let s = extra
            .iter_mut()
            .find(|s| s.slot == slot)
            .ok_or_else(|| ProbeError::Failed(format!("{}: no memslot {slot}", self.inner.label)))?;
        if s.mapped == mapped {
            return Ok(());
        }
        let r = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: s.region.start_addr().0,
            memory_size: if mapped { s.region.len() } else { 0 },
            userspace_addr: s.region.as_ptr() as u64,
        };
        // SAFETY: the region stays alive in `extra` as long as the VM (dropped after the fd).
        unsafe { self.inner.fd.set_user_memory_region(r) }
            .map_err(|e| kvm_err(&self.inner.label, &format!("KVM_SET_USER_MEMORY_REGION(slot {slot}, mapped {mapped})"), e))?;
        s.mapped = mapped;
        Ok(())
    }

    /// Host-side write into an extra memslot, at `offset` bytes from its start.
    pub fn slot_write(&self, slot: u32, offset: u64, data: &[u8]) -> Result<(), ProbeError> {
        let extra = self.inner.extra.lock().unwrap_or_else(|e| e.into_inner());
        let s = extra
            .iter()
            .find(|s| s.slot == slot)
            .ok_or_else(|| ProbeError::Failed(format!("{}: no memslot {slot}", self.inner.label)))?;
        s.region
            .write_slice(data, MemoryRegionAddress(offset))
            .map_err(|e| ProbeError::Failed(format!("{}: slot {slot}: {e}", self.inner.label)))
    }

    /// Creates vCPU `id` in native 64-bit CPL0: CPUID (supported table, APIC id = `id`),
    /// long-mode sregs, STAR/SFMASK, and the backend's `prepare_vcpu` (kvm_pvm: VIF page).
    pub fn create_vcpu(&self, id: u32) -> Result<Vcpu, ProbeError> {
        self.create_vcpu_inner(id, true)
    }

    /// Like [`Vm::create_vcpu`] but without the backend's `prepare_vcpu` (on kvm_pvm: no VIF
    /// page, so the guest is emulated). For tests of the native check only.
    pub fn create_vcpu_without_backend_setup(&self, id: u32) -> Result<Vcpu, ProbeError> {
        self.create_vcpu_inner(id, false)
    }

    fn create_vcpu_inner(&self, id: u32, backend_setup: bool) -> Result<Vcpu, ProbeError> {
        let label = self.label();
        let kvm = kvm()?;
        let fd = self.inner.fd.create_vcpu(u64::from(id)).map_err(|e| kvm_err(label, "KVM_CREATE_VCPU", e))?;
        let mut cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(|e| kvm_err(label, "KVM_GET_SUPPORTED_CPUID", e))?;
        for e in cpuid.as_mut_slice() {
            if e.function == 1 {
                e.ebx = (e.ebx & 0x00ff_ffff) | (id << 24);
            }
        }
        fd.set_cpuid2(&cpuid).map_err(|e| kvm_err(label, "KVM_SET_CPUID2", e))?;

        let mut s = fd.get_sregs().map_err(|e| kvm_err(label, "KVM_GET_SREGS", e))?;
        s.cr3 = layout::PML4;
        s.cr4 = 0x620; // PAE | OSFXSR | OSXMMEXCPT
        s.cr0 = 0x8005_0033; // PG | AM | WP | NE | ET | MP | PE
        s.efer = 0xd01; // NX | LMA | LME | SCE
        let code = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: 0x10,
            type_: 11,
            present: 1,
            dpl: 0,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            ..Default::default()
        };
        let data = kvm_segment { selector: 0x18, type_: 3, db: 1, l: 0, ..code };
        s.cs = code;
        s.ss = data;
        s.ds = data;
        s.es = data;
        s.fs = data;
        s.gs = data;
        fd.set_sregs(&s).map_err(|e| kvm_err(label, "KVM_SET_SREGS", e))?;

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
        vcpu.set_msrs(&[(MSR_STAR, 0x0023_0010_0000_0000), (MSR_SFMASK, 0x700)])?;
        vcpu.setup = if backend_setup {
            self.backend()
                .prepare_vcpu(&vcpu.fd, id)
                .map_err(|e| ProbeError::Failed(format!("{label}: vCPU {id}: {}: {e}", self.backend().name())))?
        } else {
            "backend setup skipped".into()
        };
        vcpu.set_entry(self.entry(entry::DONE)?, |_| {})?;
        Ok(vcpu)
    }
}

pub const MSR_STAR: u32 = 0xc000_0081;
pub const MSR_LSTAR: u32 = 0xc000_0082;
pub const MSR_SFMASK: u32 = 0xc000_0084;

/// Exit counters of one vCPU (cumulative until [`ExitStats::reset`]).
#[derive(Clone, Debug, Default)]
pub struct ExitStats {
    pub io_out: BTreeMap<u16, u64>,
    pub io_in: BTreeMap<u16, u64>,
    pub mmio_read: u64,
    pub mmio_write: u64,
    pub hlt: u64,
    pub irq_window: u64,
    /// KVM_RUN returned EINTR (signals, watchdog kicks) or KVM_EXIT_INTR.
    pub intr: u64,
    pub total: u64,
}

impl ExitStats {
    pub fn reset(&mut self) {
        *self = ExitStats::default();
    }
    pub fn io_out_on(&self, port: u16) -> u64 {
        self.io_out.get(&port).copied().unwrap_or(0)
    }
    pub fn io_out_total(&self) -> u64 {
        self.io_out.values().sum()
    }
    /// Exits that reached the VMM with work to do (PIO incl. the done port, MMIO, HLT, IRQ
    /// window); signals and KVM_EXIT_INTR are not counted.
    pub fn userspace_exits(&self) -> u64 {
        self.io_out_total() + self.io_in.values().sum::<u64>() + self.mmio_read + self.mmio_write + self.hlt + self.irq_window
    }
}

/// The last exit of a vCPU, kept cheaply (no allocation per exit) for error messages.
#[derive(Clone, Copy, Debug)]
enum LastExit {
    None,
    IoOut(u16),
    IoIn(u16),
    MmioRead(u64),
    MmioWrite(u64),
    Hlt,
    IrqWindowOpen,
    Intr,
    Shutdown,
    InternalError,
    FailEntry(u64, u32),
    /// Any other KVM exit reason (number).
    Other(u32),
}

impl fmt::Display for LastExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LastExit::None => f.write_str("none yet"),
            LastExit::IoOut(p) => write!(f, "KVM_EXIT_IO out port {p:#x}"),
            LastExit::IoIn(p) => write!(f, "KVM_EXIT_IO in port {p:#x}"),
            LastExit::MmioRead(a) => write!(f, "KVM_EXIT_MMIO read {a:#x}"),
            LastExit::MmioWrite(a) => write!(f, "KVM_EXIT_MMIO write {a:#x}"),
            LastExit::Hlt => f.write_str("KVM_EXIT_HLT"),
            LastExit::IrqWindowOpen => f.write_str("KVM_EXIT_IRQ_WINDOW_OPEN"),
            LastExit::Intr => f.write_str("KVM_EXIT_INTR"),
            LastExit::Shutdown => f.write_str("KVM_EXIT_SHUTDOWN (triple fault)"),
            LastExit::InternalError => f.write_str("KVM_EXIT_INTERNAL_ERROR"),
            LastExit::FailEntry(r, cpu) => write!(f, "KVM_EXIT_FAIL_ENTRY reason {r:#x} on host CPU {cpu}"),
            LastExit::Other(n) => write!(f, "KVM exit reason {n}"),
        }
    }
}

/// What [`Vcpu::run_sampling_until`] collected.
#[derive(Clone, Debug)]
pub struct Sampled {
    /// Raw TSC cycles per sample (not divided by the batch size).
    pub cycles: Vec<u64>,
    /// Guest runs (each ends with one exit on the done port).
    pub chunks: u64,
    /// The wall-clock stop came before all requested samples.
    pub stopped_early: bool,
}

/// An exit handed to a probe's handler. Exits not listed here are always errors.
#[derive(Debug)]
pub enum Exit<'a> {
    IoOut { port: u16, data: &'a [u8] },
    IoIn { port: u16, data: &'a mut [u8] },
    MmioRead { addr: u64, data: &'a mut [u8] },
    MmioWrite { addr: u64, data: &'a [u8] },
    Hlt,
    IrqWindowOpen,
}

/// What a handler did with an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    /// Re-enter the guest.
    Continue,
    /// Stop the run loop successfully (like the done port).
    Stop,
    /// Not expected here: the run loop fails with the exit, RIP and probe name.
    No,
}

/// A vCPU of a [`Vm`]. `Send`: create it anywhere, run it on the thread it is pinned to.
pub struct Vcpu {
    vm: Vm,
    fd: VcpuFd,
    id: u32,
    pub stats: ExitStats,
    last_exit: LastExit,
    setup: String,
    created: Instant,
    /// Address of the vCPU's kvm_run mapping (lives as long as `fd`).
    run_addr: usize,
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
    pub fn tsc_khz(&self) -> Result<u64, ProbeError> {
        self.fd.get_tsc_khz().map(u64::from).map_err(|e| kvm_err(self.label(), "KVM_GET_TSC_KHZ", e))
    }

    pub fn set_msrs(&self, msrs: &[(u32, u64)]) -> Result<(), ProbeError> {
        let entries: Vec<kvm_msr_entry> =
            msrs.iter().map(|&(index, data)| kvm_msr_entry { index, data, ..Default::default() }).collect();
        let list = Msrs::from_entries(&entries).map_err(|e| ProbeError::Failed(format!("{}: MSR list: {e:?}", self.label())))?;
        let n = self.fd.set_msrs(&list).map_err(|e| kvm_err(self.label(), "KVM_SET_MSRS", e))?;
        if n != msrs.len() {
            let failed = msrs[n];
            return Err(ProbeError::Failed(format!(
                "{}: KVM_SET_MSRS refused MSR {:#x} = {:#x}",
                self.label(),
                failed.0,
                failed.1
            )));
        }
        Ok(())
    }

    /// Points the vCPU at `rip` with a fresh stack and RFLAGS = 2; `f` sets argument
    /// registers.
    pub fn set_entry(&mut self, rip: u64, f: impl FnOnce(&mut kvm_regs)) -> Result<(), ProbeError> {
        let mut r = kvm_regs { rip, rflags: 2, rsp: layout::stack_top(self.id), ..Default::default() };
        f(&mut r);
        self.fd.set_regs(&r).map_err(|e| kvm_err(self.label(), "KVM_SET_REGS", e))
    }

    pub fn regs(&self) -> Result<kvm_regs, ProbeError> {
        self.fd.get_regs().map_err(|e| kvm_err(self.label(), "KVM_GET_REGS", e))
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
                if self.backend().kind() == backend::BackendKind::Pvm {
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
    fn describe_last_exit(&self) -> String {
        match self.last_exit {
            LastExit::InternalError => {
                // SAFETY: read-only copy of the union member that the last exit reason selects;
                // `last_exit` is only InternalError right after such an exit.
                let run = unsafe { &*(self.fd_run_ptr()) };
                let i = unsafe { run.__bindgen_anon_1.internal };
                let n = (i.ndata as usize).min(i.data.len());
                format!("KVM_EXIT_INTERNAL_ERROR suberror {} data {:x?}", i.suberror, &i.data[..n])
            }
            l => l.to_string(),
        }
    }

    fn fd_run_ptr(&self) -> *const kvm_bindings::kvm_run {
        self.run_addr as *const kvm_bindings::kvm_run
    }

    fn fail(&self, what: &str) -> ProbeError {
        ProbeError::Failed(format!(
            "{}: {what} at RIP {} (vCPU {}, last exit: {}){}",
            self.label(),
            self.rip(),
            self.id,
            self.describe_last_exit(),
            self.hint_at_rip()
        ))
    }

    /// Runs the guest until it writes to [`layout::PORT_DONE`] (or `handler` returns
    /// [`Handled::Stop`]), guarded by the watchdog: past `deadline` KVM_RUN is interrupted
    /// and the run fails with `ProbeError::Timeout` naming the probe, RIP and last exit.
    /// Exits the handler does not take (`Handled::No`), KVM_EXIT_SHUTDOWN,
    /// KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_FAIL_ENTRY and unknown exits fail with
    /// `ProbeError::Failed` naming the probe, exit and RIP.
    pub fn run(&mut self, deadline: Instant, handler: &mut dyn FnMut(Exit<'_>) -> Handled) -> Result<(), ProbeError> {
        let imm = &mut self.fd.get_kvm_run().immediate_exit as *mut u8;
        let guard = watchdog::Guard::arm(deadline, imm);
        let result = self.run_loop(&guard, handler);
        drop(guard);
        self.fd.set_kvm_immediate_exit(0);
        result
    }

    fn run_loop(&mut self, guard: &watchdog::Guard, handler: &mut dyn FnMut(Exit<'_>) -> Handled) -> Result<(), ProbeError> {
        enum Next {
            Continue,
            Stop,
            Error(String),
        }
        loop {
            if guard.fired() {
                return Err(self.timeout(guard));
            }
            let next = match self.fd.run() {
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.stats.intr += 1;
                    Next::Continue
                }
                Err(e) => Next::Error(format!("KVM_RUN failed: {e}")),
                Ok(exit) => {
                    self.stats.total += 1;
                    let (last, exit) = match exit {
                        VcpuExit::IoOut(port, data) => {
                            *self.stats.io_out.entry(port).or_default() += 1;
                            (LastExit::IoOut(port), Some(Exit::IoOut { port, data }))
                        }
                        VcpuExit::IoIn(port, data) => {
                            *self.stats.io_in.entry(port).or_default() += 1;
                            (LastExit::IoIn(port), Some(Exit::IoIn { port, data }))
                        }
                        VcpuExit::MmioRead(addr, data) => {
                            self.stats.mmio_read += 1;
                            (LastExit::MmioRead(addr), Some(Exit::MmioRead { addr, data }))
                        }
                        VcpuExit::MmioWrite(addr, data) => {
                            self.stats.mmio_write += 1;
                            (LastExit::MmioWrite(addr), Some(Exit::MmioWrite { addr, data }))
                        }
                        VcpuExit::Hlt => {
                            self.stats.hlt += 1;
                            (LastExit::Hlt, Some(Exit::Hlt))
                        }
                        VcpuExit::IrqWindowOpen => {
                            self.stats.irq_window += 1;
                            (LastExit::IrqWindowOpen, Some(Exit::IrqWindowOpen))
                        }
                        VcpuExit::Intr => {
                            self.stats.intr += 1;
                            (LastExit::Intr, None)
                        }
                        VcpuExit::Shutdown => (LastExit::Shutdown, None),
                        VcpuExit::InternalError => (LastExit::InternalError, None),
                        VcpuExit::FailEntry(reason, cpu) => (LastExit::FailEntry(reason, cpu), None),
                        _ => (LastExit::Other(0), None),
                    };
                    let next = match exit {
                        Some(Exit::IoOut { port: layout::PORT_DONE, .. }) => Next::Stop,
                        Some(Exit::IoOut { port: layout::PORT_ERROR, data }) => {
                            Next::Error(format!("guest reported error {:?} on port {:#x}", data, layout::PORT_ERROR))
                        }
                        Some(e) => match handler(e) {
                            Handled::Continue => Next::Continue,
                            Handled::Stop => Next::Stop,
                            Handled::No => Next::Error(format!("unexpected exit {last}")),
                        },
                        None if matches!(last, LastExit::Intr) => Next::Continue,
                        None => Next::Error(String::new()),
                    };
                    self.last_exit = match last {
                        LastExit::Other(_) => LastExit::Other(self.fd.get_kvm_run().exit_reason),
                        l => l,
                    };
                    match next {
                        Next::Error(e) if e.is_empty() => Next::Error(format!("fatal exit {}", self.describe_last_exit())),
                        n => n,
                    }
                }
            };
            match next {
                Next::Continue => {}
                Next::Stop => return Ok(()),
                Next::Error(what) => {
                    if guard.fired() {
                        return Err(self.timeout(guard));
                    }
                    return Err(self.fail(&what));
                }
            }
        }
    }

    fn timeout(&self, guard: &watchdog::Guard) -> ProbeError {
        ProbeError::Timeout(
            self.created.elapsed(),
            format!(
                "{}: guest did not finish: the watchdog stopped vCPU {} at RIP {} after {:?} in this run call \
                 (last exit: {}; {} exits since the last stats reset){}",
                self.label(),
                self.id,
                self.rip(),
                guard.elapsed(),
                self.describe_last_exit(),
                self.stats.total,
                self.hint_at_rip()
            ),
        )
    }

    /// Runs a sampling payload (common register convention, see `payloads`) for `samples`
    /// samples of `batch` operations each, in chunks that fit the vCPU's sample buffer.
    /// `setup` sets payload-specific registers; `handler` takes the payload's exits.
    /// Returns the raw per-sample TSC differences (not divided by `batch`); fails unless
    /// the guest wrote exactly `samples` samples.
    pub fn run_sampling(
        &mut self,
        entry: Entry,
        samples: u64,
        batch: u64,
        deadline: Instant,
        setup: &dyn Fn(&mut kvm_regs),
        handler: &mut dyn FnMut(Exit<'_>) -> Handled,
    ) -> Result<Vec<u64>, ProbeError> {
        Ok(self.run_sampling_until(entry, samples, batch, deadline, None, setup, handler)?.cycles)
    }

    /// [`Vcpu::run_sampling`] that also stops (between chunks) once `stop_at` has passed,
    /// for budgets with a wall-clock duration. With `stop_at` the chunks are sized to take
    /// about 50 ms each, so the overshoot stays small.
    #[allow(clippy::too_many_arguments)]
    pub fn run_sampling_until(
        &mut self,
        entry: Entry,
        samples: u64,
        batch: u64,
        deadline: Instant,
        stop_at: Option<Instant>,
        setup: &dyn Fn(&mut kvm_regs),
        handler: &mut dyn FnMut(Exit<'_>) -> Handled,
    ) -> Result<Sampled, ProbeError> {
        let rip = self.vm.entry(entry)?;
        let (buf, cap) = layout::samples(self.id);
        let mut out = Vec::with_capacity(samples.min(cap) as usize);
        let mut left = samples;
        let mut chunks = 0;
        let mut next = if stop_at.is_some() { cap.min(1000) } else { cap };
        while left > 0 {
            if stop_at.is_some_and(|t| Instant::now() >= t) {
                break;
            }
            let n = left.min(next);
            self.vm.fill_u64s(buf, n as usize, u64::MAX)?;
            let id = self.id;
            self.set_entry(rip, |r| {
                r.rdi = buf;
                r.rsi = n;
                r.r8 = batch;
                r.r9 = layout::results(id);
                setup(r);
            })?;
            let t0 = Instant::now();
            self.run(deadline, handler)?;
            let took = t0.elapsed();
            chunks += 1;
            let end = self.regs()?.rdi;
            if end != buf + 8 * n {
                return Err(self.fail(&format!(
                    "payload {entry} wrote {} samples, expected {n}",
                    end.wrapping_sub(buf) as i64 / 8
                )));
            }
            let chunk = self.vm.read_u64s(buf, n as usize)?;
            if let Some(i) = chunk.iter().position(|&c| c == u64::MAX) {
                return Err(self.fail(&format!("payload {entry} left sample {i} of {n} unwritten")));
            }
            out.extend_from_slice(&chunk);
            left -= n;
            if stop_at.is_some() {
                let per_sample = took.as_secs_f64() / n as f64;
                next = ((0.05 / per_sample.max(1e-9)) as u64).clamp(100, cap);
            }
        }
        Ok(Sampled { stopped_early: left > 0, cycles: out, chunks })
    }

    /// `run_sampling` for payloads without exits of their own.
    pub fn run_batched_payload(&mut self, entry: Entry, samples: u64, batch: u64, deadline: Instant) -> Result<Vec<u64>, ProbeError> {
        self.run_sampling(entry, samples, batch, deadline, &|_| {}, &mut |_| Handled::No)
    }

    /// Median cost of a back-to-back `lfence; rdtsc` pair measured in this guest (the
    /// `overhead_cycles` of its per-op samples).
    /// Five runs of 1001 pairs; the lowest median wins (a run that shared its CPU with a
    /// host thread is slower throughout).
    pub fn timer_overhead(&mut self, deadline: Instant) -> Result<u64, ProbeError> {
        let mut best = u64::MAX;
        for _ in 0..5 {
            let mut s = self.run_batched_payload(entry::TSC_OVERHEAD, 1001, 1, deadline)?;
            s.sort_unstable();
            best = best.min(s[s.len() / 2]);
        }
        Ok(best)
    }
}
