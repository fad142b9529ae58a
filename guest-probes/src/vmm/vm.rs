//! [`Vm`]: one KVM VM, its main memory (slot 0) and extra memslots (shared regions, the
//! protected view). vCPUs are in `vcpu.rs`, the run loop in `run.rs`.

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
}
