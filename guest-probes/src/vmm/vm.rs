//! [`Vm`]: one KVM VM, its main memory (slot 0) and extra memslots (shared regions, the
//! protected view). vCPUs are in `vcpu.rs`, the run loop in `run.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap, MemoryRegionAddress,
    MmapRegion,
};

use super::arch;
use super::backend::Backend;
use super::error::VmmError;
use super::host::host;
use super::layout::{self, GuestLayout};
use super::shared::SharedMemory;
use super::views;
use crate::payloads::{Entry, Image};

/// The guest image for this host's backend (assembled once).
fn image() -> Result<&'static Image, VmmError> {
    static IMG: OnceLock<Result<Image, String>> = OnceLock::new();
    let b = host().backend()?;
    IMG.get_or_init(|| Image::build(b)).as_ref().map_err(|e| VmmError::setup("guest image", e.clone()))
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
    layout: GuestLayout,
    memory: GuestMemoryMmap,
    extra: Mutex<Vec<ExtraSlot>>,
    image: &'static Image,
    /// KVM_VMFUNC_ENABLE succeeded: vCPUs get the views CPUID bit.
    views_enabled: AtomicBool,
}

/// A VM: identity-mapped main memory in slot 0 with all payloads loaded, plus optional
/// extra memslots. Cheap to clone (shared handle); every `Vcpu` holds one.
#[derive(Clone)]
pub struct Vm {
    inner: Arc<VmInner>,
}

impl Vm {
    /// A VM for up to two vCPUs (the layout every one-VM probe uses).
    pub fn new(label: &str) -> Result<Vm, VmmError> {
        let layout = GuestLayout::new(2, &[]).map_err(|e| VmmError::setup(label, e.to_string()))?;
        Vm::with_layout(label, layout)
    }

    /// Creates a VM for the probe (or test) `label`: KVM_CREATE_VM, slot 0 of
    /// `layout.mem_size()` bytes at GPA 0, identity page tables ([`arch::identity_page_tables`]),
    /// the guest image at [`layout::IMAGE`], backend VM setup. The layout's shared regions
    /// are placed by [`Vm::add_shared`].
    pub fn with_layout(label: &str, layout: GuestLayout) -> Result<Vm, VmmError> {
        let kvm = host().kvm()?;
        let backend = host().backend()?;
        let image = image()?;
        let fd = kvm.create_vm().map_err(|e| VmmError::ioctl(label, "KVM_CREATE_VM", e))?;
        let size = layout.mem_size();
        // MAP_SHARED anonymous memory, like the C prototype: on kvm_pvm every trap into KVM
        // (even an in-kernel hypercall) measured ~1,100 cycles slower with the MAP_PRIVATE
        // anonymous memory that vm-memory allocates by default (10.5k vs 11.6k cycles
        // minimum for vm.hypercall.null, repeated A/B runs).
        let region = vm_memory::mmap::MmapRegionBuilder::new(size)
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE)
            .build()
            .map_err(|e| VmmError::memory(label, 0, format!("mmap {size} bytes: {e}")))?;
        let region = GuestRegionMmap::new(region, GuestAddress(0))
            .ok_or_else(|| VmmError::memory(label, 0, "main memory region overflows"))?;
        let memory = GuestMemoryMmap::from_regions(vec![region]).map_err(|e| VmmError::memory(label, 0, e))?;
        let host_addr = memory.get_host_address(GuestAddress(0)).map_err(|e| VmmError::memory(label, 0, e))?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: size as u64,
            userspace_addr: host_addr as u64,
        };
        // SAFETY: the mapping is owned by VmInner next to the VM fd, and the fd is dropped
        // first (field order), so KVM never sees the memory unmapped while the slot exists.
        unsafe { fd.set_user_memory_region(region) }
            .map_err(|e| VmmError::ioctl(label, "KVM_SET_USER_MEMORY_REGION(slot 0)", e))?;
        backend.prepare_vm(&fd).map_err(|e| VmmError::setup(label, format!("{}: {e}", backend.name())))?;
        let vm = Vm {
            inner: Arc::new(VmInner {
                fd,
                label: label.to_string(),
                backend,
                layout,
                memory,
                extra: Mutex::new(Vec::new()),
                image,
                views_enabled: AtomicBool::new(false),
            }),
        };
        for (gpa, bytes) in arch::identity_page_tables() {
            vm.write_bytes(gpa, &bytes)?;
        }
        vm.write_bytes(layout::IMAGE, &image.bytes)?;
        Ok(vm)
    }

    pub fn label(&self) -> &str {
        &self.inner.label
    }
    pub fn backend(&self) -> &'static dyn Backend {
        self.inner.backend
    }
    pub fn layout(&self) -> &GuestLayout {
        &self.inner.layout
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
    pub fn entry(&self, e: Entry) -> Result<u64, VmmError> {
        self.inner.image.entry(e).ok_or_else(|| VmmError::setup(self.label(), format!("no payload entry `{e}`")))
    }

    /// `(gpa, len)` of a payload's code in the guest.
    pub fn payload_range(&self, name: &str) -> Result<(u64, u64), VmmError> {
        self.inner
            .image
            .payload_range(name)
            .ok_or_else(|| VmmError::setup(self.label(), format!("no payload `{name}`")))
    }

    pub fn write_bytes(&self, gpa: u64, data: &[u8]) -> Result<(), VmmError> {
        self.inner.memory.write_slice(data, GuestAddress(gpa)).map_err(|e| VmmError::memory(self.label(), gpa, e))
    }
    pub fn read_bytes(&self, gpa: u64, data: &mut [u8]) -> Result<(), VmmError> {
        self.inner.memory.read_slice(data, GuestAddress(gpa)).map_err(|e| VmmError::memory(self.label(), gpa, e))
    }
    pub fn write_u64(&self, gpa: u64, v: u64) -> Result<(), VmmError> {
        self.inner.memory.write_obj(v, GuestAddress(gpa)).map_err(|e| VmmError::memory(self.label(), gpa, e))
    }
    pub fn read_u64(&self, gpa: u64) -> Result<u64, VmmError> {
        self.inner.memory.read_obj(GuestAddress(gpa)).map_err(|e| VmmError::memory(self.label(), gpa, e))
    }
    /// Reads `n` u64 words from main memory.
    pub fn read_u64s(&self, gpa: u64, n: usize) -> Result<Vec<u64>, VmmError> {
        let mut bytes = vec![0u8; n * 8];
        self.read_bytes(gpa, &mut bytes)?;
        Ok(bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect())
    }
    /// Fills `n` u64 words of main memory with `v`.
    pub fn fill_u64s(&self, gpa: u64, n: usize, v: u64) -> Result<(), VmmError> {
        let bytes: Vec<u8> = std::iter::repeat_n(v.to_le_bytes(), n).flatten().collect();
        self.write_bytes(gpa, &bytes)
    }

    /// Adds memslot `slot` at `gpa` backed by `region` (mapped into the guest at once when
    /// `mapped`). The guest page tables already cover the first GiB.
    fn add_region(&self, slot: u32, gpa: u64, region: Arc<MmapRegion>, mapped: bool) -> Result<(), VmmError> {
        if slot == 0 {
            return Err(VmmError::setup(self.label(), "slot 0 is the main memory"));
        }
        if gpa < self.inner.layout.mem_size() as u64 || gpa + region.size() as u64 > layout::IDENTITY_MAPPED {
            return Err(VmmError::memory(
                self.label(),
                gpa,
                "an extra memslot must lie above main memory, inside the first GiB",
            ));
        }
        let region = Arc::new(
            GuestRegionMmap::with_arc(region, GuestAddress(gpa))
                .ok_or_else(|| VmmError::memory(self.label(), gpa, "region overflows"))?,
        );
        let mut extra = self.inner.extra.lock().unwrap_or_else(|e| e.into_inner());
        if extra.iter().any(|s| s.slot == slot) {
            return Err(VmmError::setup(self.label(), format!("memslot {slot} already exists")));
        }
        extra.push(ExtraSlot { slot, region, mapped: false });
        drop(extra);
        if mapped {
            self.set_slot_mapped(slot, true)?;
        }
        Ok(())
    }

    /// Maps `shared` into this VM as memslot `slot` at `gpa` (several VMs may map the same
    /// `SharedMemory`, at the same or different GPAs; see [`layout::shared_gpa`]).
    pub fn add_shared(&self, slot: u32, gpa: u64, shared: &SharedMemory) -> Result<(), VmmError> {
        self.add_region(slot, gpa, shared.region().clone(), true)
    }

    /// Adds a private anonymous memslot (e.g. the protected view), initially unmapped.
    pub fn add_private_slot(&self, slot: u32, gpa: u64, size: usize) -> Result<(), VmmError> {
        let region = MmapRegion::new(size).map_err(|e| VmmError::memory(self.label(), gpa, format!("mmap: {e}")))?;
        self.add_region(slot, gpa, Arc::new(region), false)
    }

    /// Makes an extra memslot visible to the guest (KVM_SET_USER_MEMORY_REGION with its
    /// size) or removes it (size 0: accesses then exit as KVM_EXIT_MMIO). The host view
    /// (`slot_write`) is unaffected.
    pub fn set_slot_mapped(&self, slot: u32, mapped: bool) -> Result<(), VmmError> {
        let mut extra = self.inner.extra.lock().unwrap_or_else(|e| e.into_inner());
        let s = extra
            .iter_mut()
            .find(|s| s.slot == slot)
            .ok_or_else(|| VmmError::setup(&self.inner.label, format!("no memslot {slot}")))?;
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
        // SAFETY: the region stays alive in `extra` as long as the VM, whose fd is dropped
        // before it (VmInner field order).
        unsafe { self.inner.fd.set_user_memory_region(r) }.map_err(|e| {
            VmmError::ioctl(&self.inner.label, format!("KVM_SET_USER_MEMORY_REGION(slot {slot}, mapped {mapped})"), e)
        })?;
        s.mapped = mapped;
        Ok(())
    }

    /// Host-side write into an extra memslot, at `offset` bytes from its start.
    pub fn slot_write(&self, slot: u32, offset: u64, data: &[u8]) -> Result<(), VmmError> {
        let extra = self.inner.extra.lock().unwrap_or_else(|e| e.into_inner());
        let s = extra
            .iter()
            .find(|s| s.slot == slot)
            .ok_or_else(|| VmmError::setup(&self.inner.label, format!("no memslot {slot}")))?;
        s.region
            .write_slice(data, MemoryRegionAddress(offset))
            .map_err(|e| VmmError::memory(&self.inner.label, s.region.start_addr().0 + offset, e))
    }

    /// Turns VMFUNC views on for this VM (the ivbench kvm-patch, [`views`]): QUERY must
    /// answer the API version with the HW flag, then ENABLE. Only before the first vCPU.
    /// A host without the API is `VmmError::Unsupported` with the reason.
    pub fn enable_views(&self) -> Result<views::Query, VmmError> {
        let q = views::check_query(views::query(self.fd())).map_err(VmmError::Unsupported)?;
        views::enable(self.fd()).map_err(|e| self.view_error(e))?;
        self.inner.views_enabled.store(true, Ordering::Release);
        Ok(q)
    }
    /// Whether [`Vm::enable_views`] succeeded.
    pub fn views_enabled(&self) -> bool {
        self.inner.views_enabled.load(Ordering::Acquire)
    }
    fn view_error(&self, e: views::CmdError) -> VmmError {
        VmmError::ioctl(self.label(), format!("KVM_MEMORY_ENCRYPT_OP({})", views::cmd_name(e.cmd)), e.errno)
    }
    pub fn view_create(&self, index: u32, tag: u64) -> Result<(), VmmError> {
        views::create(self.fd(), index, tag).map_err(|e| self.view_error(e))
    }
    pub fn view_publish(&self, index: u32) -> Result<(), VmmError> {
        views::publish(self.fd(), index).map_err(|e| self.view_error(e))
    }
    pub fn view_destroy(&self, index: u32) -> Result<(), VmmError> {
        views::destroy(self.fd(), index).map_err(|e| self.view_error(e))
    }
    pub fn view_stats(&self, vcpu: u32) -> Result<views::Stats, VmmError> {
        views::vcpu_stats(self.fd(), vcpu).map_err(|e| self.view_error(e))
    }

    /// Maps `len` bytes of this VM's main memory at `gpa` into view `index` at the same
    /// GPA (the guest's own pages: its page tables, its code) with `perm`.
    pub fn view_map_main(&self, index: u32, gpa: u64, len: u64, perm: u32) -> Result<(), VmmError> {
        check_pages(self.label(), gpa, len)?;
        if gpa + len > self.layout().mem_size() as u64 {
            return Err(VmmError::memory(
                self.label(),
                gpa,
                format!("{len} bytes for view {index} run past main memory"),
            ));
        }
        let host = self
            .inner
            .memory
            .get_host_address(GuestAddress(gpa))
            .map_err(|e| VmmError::memory(self.label(), gpa, e))?;
        let m = views::Map { index, perm, gpa, uaddr: host as u64, npages: len / PAGE };
        // SAFETY: `host .. host + len` is inside slot 0's mapping, owned by this VM and
        // alive for the call (and as long as the VM).
        unsafe { views::map(self.fd(), m) }.map_err(|e| self.view_error(e))
    }

    /// Maps payload `payload`'s code and the page tables into view `index`
    /// ([`views::trampoline_pages`]): what its code needs to run inside the view.
    pub fn view_map_trampoline(&self, index: u32, payload: &str) -> Result<(), VmmError> {
        for (gpa, len, perm) in views::trampoline_pages(self.payload_range(payload)?) {
            self.view_map_main(index, gpa, len, perm)?;
        }
        Ok(())
    }

    /// Maps `len` bytes at `offset` of extra memslot `slot` (mapped into the guest or not)
    /// into view `index` at `gpa` with `perm`.
    pub fn view_map_slot(
        &self,
        index: u32,
        slot: u32,
        offset: u64,
        len: u64,
        gpa: u64,
        perm: u32,
    ) -> Result<(), VmmError> {
        let extra = self.inner.extra.lock().unwrap_or_else(|e| e.into_inner());
        let s = extra
            .iter()
            .find(|s| s.slot == slot)
            .ok_or_else(|| VmmError::setup(&self.inner.label, format!("no memslot {slot}")))?;
        let region = (s.region.as_ptr() as u64, s.region.len());
        // the lock keeps the slot (and its mapping) for the call
        self.view_map_host(index, region, (offset, len), gpa, perm, &format!("slot {slot}"))
    }

    /// Maps `len` bytes at `offset` of `shared` (memory another VM may have as a memslot)
    /// into view `index` at `gpa` with `perm`.
    pub fn view_map_shared(
        &self,
        index: u32,
        shared: &SharedMemory,
        offset: u64,
        len: u64,
        gpa: u64,
        perm: u32,
    ) -> Result<(), VmmError> {
        let region = (shared.host_addr() as u64, shared.size() as u64);
        self.view_map_host(index, region, (offset, len), gpa, perm, "shared memory")
    }

    /// `VIEW_MAP` of `range` = (offset, len) of the host mapping `region` = (address,
    /// size), after checking that it is whole pages inside it.
    fn view_map_host(
        &self,
        index: u32,
        region: (u64, u64),
        range: (u64, u64),
        gpa: u64,
        perm: u32,
        what: &str,
    ) -> Result<(), VmmError> {
        let (offset, len) = range;
        check_pages(self.label(), gpa, len)?;
        if !offset.is_multiple_of(PAGE) || offset.checked_add(len).is_none_or(|end| end > region.1) {
            return Err(VmmError::memory(
                self.label(),
                gpa,
                format!("{what}: {len} bytes at +{offset:#x} are not whole pages inside it"),
            ));
        }
        let m = views::Map { index, perm, gpa, uaddr: region.0 + offset, npages: len / PAGE };
        // SAFETY: the range lies inside a mapping of this process (checked above) that the
        // caller borrows for the call (a memslot region the VM keeps, or a SharedMemory);
        // KVM pins the pages it maps.
        unsafe { views::map(self.fd(), m) }.map_err(|e| self.view_error(e))
    }
}

const PAGE: u64 = 0x1000;

fn check_pages(label: &str, gpa: u64, len: u64) -> Result<(), VmmError> {
    if !gpa.is_multiple_of(PAGE) {
        return Err(VmmError::memory(label, gpa, "a view maps whole 4 KiB pages; the address is not page aligned"));
    }
    if len == 0 || !len.is_multiple_of(PAGE) {
        return Err(VmmError::memory(label, gpa, format!("a view maps whole 4 KiB pages; got {len:#x} bytes")));
    }
    Ok(())
}
