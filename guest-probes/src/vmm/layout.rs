//! Guest physical memory layout shared by the VMM and every payload.
//!
//! All guests are identity mapped (GVA == GPA) for the first GiB with 2 MiB pages; the
//! main memslot (slot 0) backs `0 .. MEM_SIZE`. Everything above `MEM_SIZE` inside the
//! first GiB is mapped by the page tables but has no memslot, so an access there leaves
//! the guest as KVM_EXIT_MMIO (unless another memslot is placed there).
//!
//! ```text
//! 0x0000_0500  GDT (reserved for interrupt probes: 0x10 code, 0x18 data)
//! 0x0000_1000  PML4, 0x2000 PDPT, 0x3000 PD for GiB 0, 0x4000 PD for GiB 3 (APIC page)
//! 0x0000_5000  IDT (reserved for interrupt probes, 256 x 16 bytes)
//! 0x0000_6000  per-vCPU parameter / status areas, 0x100 bytes each
//! 0x0000_7000  guest "kernel" data (the SYSCALL handler's answer lives here)
//! 0x0000_8000  VIF pages (kvm_pvm), one 4 KiB page per vCPU (at most MAX_VCPUS)
//! 0x0001_0000  guest image: all payloads, patched for the backend
//! 0x0010_0000  stacks: vCPU k supervisor stack top = 0x200000 - k * 0x20000,
//!              user stack top 0x10000 below it
//! 0x0030_0000  per-vCPU result words, 0x1000 bytes each
//! 0x0040_0000  per-vCPU sample buffers, SAMPLES_PER_VCPU bytes each
//! 0x0200_0000  end of the main memslot (MEM_SIZE)
//! 0x1000_0000  SHARED_GPA: default place for a memfd region shared between VMs
//! 0x2000_0000  PROTECTED_GPA: the "protected" memslot of the view probes
//! 0x3000_0000  MMIO_GPA: never backed; stores here exit as KVM_EXIT_MMIO
//! ```

pub const MEM_SIZE: usize = 32 << 20;
pub const GDT: u64 = 0x500;
pub const PML4: u64 = 0x1000;
pub const PDPT: u64 = 0x2000;
pub const PD0: u64 = 0x3000;
pub const PD3: u64 = 0x4000;
pub const IDT: u64 = 0x5000;
pub const PARAMS: u64 = 0x6000;
pub const KDATA: u64 = 0x7000;
pub const VIF_BASE: u64 = 0x8000;
pub const MAX_VCPUS: u32 = 8;
pub const IMAGE: u64 = 0x10000;
pub const IMAGE_MAX: usize = 0xf0000;
pub const STACKS_TOP: u64 = 0x200000;
pub const RESULTS: u64 = 0x300000;
pub const SAMPLES: u64 = 0x400000;
/// Sample buffer per vCPU: 12 MiB = 1.5 M samples; two vCPUs fit below MEM_SIZE.
pub const SAMPLES_PER_VCPU: u64 = 0xC0_0000;
pub const SHARED_GPA: u64 = 0x1000_0000;
pub const PROTECTED_GPA: u64 = 0x2000_0000;
pub const MMIO_GPA: u64 = 0x3000_0000;

/// Port the payloads write to when they are done (KVM_EXIT_IO, handled by the run loop).
pub const PORT_DONE: u16 = 0xf0;
/// Port a payload writes an error code to (the run loop turns it into an error).
pub const PORT_ERROR: u16 = 0xf1;

/// GPA of vCPU `id`'s VIF page (kvm_pvm).
pub fn vif_page(id: u32) -> u64 {
    VIF_BASE + u64::from(id) * 0x1000
}
/// Supervisor stack top of vCPU `id`.
pub fn stack_top(id: u32) -> u64 {
    STACKS_TOP - u64::from(id) * 0x20000
}
/// User-mode stack top of vCPU `id`.
pub fn user_stack_top(id: u32) -> u64 {
    stack_top(id) - 0x10000
}
/// Result words of vCPU `id`.
pub fn results(id: u32) -> u64 {
    RESULTS + u64::from(id) * 0x1000
}
/// Parameter / status area of vCPU `id`.
pub fn params(id: u32) -> u64 {
    PARAMS + u64::from(id) * 0x100
}
/// Sample buffer of vCPU `id` and its capacity in samples.
pub fn samples(id: u32) -> (u64, u64) {
    (SAMPLES + u64::from(id) * SAMPLES_PER_VCPU, SAMPLES_PER_VCPU / 8)
}
