//! Guest physical memory layout shared by the VMM and every payload, for N vCPUs and M
//! shared regions.
//!
//! The numbers are the guest ABI's ([`crate::abi::mem`], which the assembly reads too);
//! this module adds the per-vCPU and per-region arithmetic, the assertions (checked at
//! compile time) that keep the areas apart for up to [`MAX_VCPUS`] vCPUs and
//! [`MAX_SHARED`] shared regions, and [`GuestLayout`], the plan of one VM.
//!
//! All guests are identity mapped (GVA == GPA) for the first GiB with 2 MiB pages; the
//! main memslot (slot 0) backs `0 .. mem_size(vcpus)`. Everything above it inside the
//! first GiB is mapped by the page tables but has no memslot, so an access there leaves
//! the guest as KVM_EXIT_MMIO (unless another memslot is placed there).
//!
//! ```text
//! 0x0000_0500  GDT (interrupt probes: 0x10 code, 0x18 data)
//! 0x0000_1000  PML4, 0x2000 PDPT, 0x3000 PD for GiB 0, 0x4000 PD for GiB 3 (APIC page)
//! 0x0000_5000  IDT (interrupt probes, 256 x 16 bytes)
//! 0x0000_6000  per-vCPU status areas, 0x100 bytes each
//! 0x0000_7000  guest "kernel" data (the SYSCALL handler's answer lives here)
//! 0x0000_8000  VIF pages (kvm_pvm), one 4 KiB page per vCPU
//! 0x0001_0000  guest image: all payloads, patched for the backend
//! 0x0010_0000  stacks: vCPU k supervisor stack top = 0x200000 - k * 0x20000,
//!              user stack top 0x10000 below it
//! 0x0030_0000  per-vCPU result words, 0x1000 bytes each
//! 0x0031_0000  the one-VM notify lines (ping/pong), 0x0031_1000 the MWAIT line
//! 0x0032_0000  the packet-path block (`path_gen` / `path_sink`), 64 KiB
//! 0x0040_0000  per-vCPU sample buffers, SAMPLES_PER_VCPU bytes each
//! mem_size(n)  end of the main memslot: 32 MiB for up to 2 vCPUs, 100 MiB for 8
//! 0x1000_0000  shared region k at SHARED_GPA + k * 16 MiB (memfds shared between VMs)
//! 0x2000_0000  PROTECTED_GPA: the "protected" memslot of the view probes
//! 0x3000_0000  MMIO_GPA: never backed; stores here exit as KVM_EXIT_MMIO
//! ```

use std::fmt;

pub use crate::abi::mem::*;
pub use crate::abi::port::{DONE as PORT_DONE, ERROR as PORT_ERROR};

/// vCPUs one VM's layout has room for.
pub const MAX_VCPUS: u32 = 8;
/// Shared regions one VM's layout has room for (each up to [`SHARED_STRIDE`] bytes).
pub const MAX_SHARED: u32 = 16;
/// Main memory of a VM with up to two vCPUs (and the least any VM gets).
pub const MEM_SIZE: usize = 32 << 20;
/// The two cache lines of the one-VM ping-pong (ping at +0, pong at +64).
pub const NOTIFY_LINES: u64 = RESULTS + 0x1_0000;
/// The line `vm.notify.mwait` monitors.
pub const MWAIT_LINE: u64 = RESULTS + 0x1_1000;
/// The guest identity map covers the first GiB.
pub const IDENTITY_MAPPED: u64 = 1 << 30;
const PAGE: u64 = 0x1000;
const HUGE_PAGE: u64 = 2 << 20;

/// Bytes of main memory (slot 0) for a VM with `vcpus` vCPUs: up to the end of the last
/// sample buffer, rounded up to 2 MiB, at least [`MEM_SIZE`].
pub const fn mem_size(vcpus: u32) -> usize {
    let end = SAMPLES + vcpus as u64 * SAMPLES_PER_VCPU;
    let end = end.div_ceil(HUGE_PAGE) * HUGE_PAGE;
    if end < MEM_SIZE as u64 {
        MEM_SIZE
    } else {
        end as usize
    }
}

// The areas stay apart for MAX_VCPUS vCPUs and MAX_SHARED regions.
const _: () = {
    assert!(GDT + 4 * 8 <= PML4);
    assert!(PML4 < PDPT && PDPT < PD0 && PD0 < PD3 && PD3 + PAGE <= IDT);
    assert!(IDT + 256 * 16 <= PARAMS);
    assert!(PARAMS + MAX_VCPUS as u64 * PARAMS_STRIDE <= KDATA);
    assert!(crate::abi::status::SIZE <= PARAMS_STRIDE);
    assert!(KDATA + PAGE <= VIF_BASE);
    assert!(VIF_BASE + MAX_VCPUS as u64 * PAGE <= IMAGE);
    assert!(IMAGE + IMAGE_MAX <= STACKS_TOP - MAX_VCPUS as u64 * STACK_STRIDE);
    assert!(USER_STACK_GAP < STACK_STRIDE);
    assert!(STACKS_TOP <= RESULTS);
    assert!(RESULTS + MAX_VCPUS as u64 * RESULTS_STRIDE <= NOTIFY_LINES);
    assert!(NOTIFY_LINES + crate::abi::lines::SIZE <= MWAIT_LINE);
    assert!(MWAIT_LINE + 64 <= PATH_BLOCK);
    assert!(PATH_BLOCK + PATH_BLOCK_SIZE <= SAMPLES);
    {
        use crate::abi::path as p;
        assert!(p::CYCLE + 12 * p::ENTRY_SIZE <= p::KINDS);
        assert!(p::KINDS + p::MAX_TEMPLATES * p::ENTRY_SIZE <= p::SEQ_BITMAP);
        assert!(p::SEQ_BITMAP + p::SEQ_WINDOW / 8 <= p::COPY_BUF);
        // a copying sink copies whole 16-byte words: up to 15 bytes past the frame
        assert!(p::COPY_BUF + packet_ring::layout::BUF_SIZE as u64 + 16 <= p::TEMPLATES);
        assert!(p::TEMPLATE_STRIDE >= packet_ring::layout::MAX_FRAME as u64 + 16);
        assert!(p::TEMPLATE_STRIDE >= packet_ring::layout::BUF_SIZE as u64);
        assert!(p::TEMPLATES + p::MAX_TEMPLATES * p::TEMPLATE_STRIDE <= p::MARKS);
        assert!(p::MARKS + p::MAX_MARKS * 8 <= PATH_BLOCK_SIZE);
        assert!(p::SEQ_WINDOW == packet_ring::traffic::SEQ_WINDOW);
        use crate::abi::fwd as f;
        assert!(f::S_HLT_T + 8 <= f::PORTS && f::P_IN_DONE + 8 <= f::PORT_SIZE);
        assert!(f::PORTS + f::MAX_PORTS * f::PORT_SIZE <= PATH_BLOCK_SIZE);
    }
    assert!(mem_size(2) == MEM_SIZE);
    assert!(mem_size(MAX_VCPUS) as u64 <= SHARED_GPA);
    assert!(SHARED_GPA.is_multiple_of(HUGE_PAGE) && SHARED_STRIDE.is_multiple_of(HUGE_PAGE));
    assert!(SHARED_GPA + MAX_SHARED as u64 * SHARED_STRIDE <= PROTECTED_GPA);
    assert!(PROTECTED_GPA < MMIO_GPA && MMIO_GPA < IDENTITY_MAPPED);
};

/// GPA of vCPU `id`'s VIF page (kvm_pvm).
pub const fn vif_page(id: u32) -> u64 {
    assert!(id < MAX_VCPUS);
    VIF_BASE + id as u64 * PAGE
}
/// Supervisor stack top of vCPU `id`.
pub const fn stack_top(id: u32) -> u64 {
    assert!(id < MAX_VCPUS);
    STACKS_TOP - id as u64 * STACK_STRIDE
}
/// User-mode stack top of vCPU `id`.
pub const fn user_stack_top(id: u32) -> u64 {
    stack_top(id) - USER_STACK_GAP
}
/// Result words of vCPU `id`.
pub const fn results(id: u32) -> u64 {
    assert!(id < MAX_VCPUS);
    RESULTS + id as u64 * RESULTS_STRIDE
}
/// Status area of vCPU `id` (words in [`crate::abi::status`]).
pub const fn params(id: u32) -> u64 {
    assert!(id < MAX_VCPUS);
    PARAMS + id as u64 * PARAMS_STRIDE
}
/// Sample buffer of vCPU `id` and its capacity in samples. Inside `mem_size(n)` for
/// every `id < n`.
pub const fn samples(id: u32) -> (u64, u64) {
    assert!(id < MAX_VCPUS);
    (SAMPLES + id as u64 * SAMPLES_PER_VCPU, SAMPLES_PER_VCPU / 8)
}
/// GPA of shared region `k`.
pub const fn shared_gpa(k: u32) -> u64 {
    assert!(k < MAX_SHARED);
    SHARED_GPA + k as u64 * SHARED_STRIDE
}

/// Why a [`GuestLayout`] cannot be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutError {
    Vcpus(u32),
    SharedCount(usize),
    SharedSize { region: usize, size: u64 },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::Vcpus(n) => write!(f, "{n} vCPUs requested; the guest layout has room for 1..={MAX_VCPUS}"),
            LayoutError::SharedCount(n) => {
                write!(f, "{n} shared regions requested; the guest layout has room for {MAX_SHARED}")
            }
            LayoutError::SharedSize { region, size } => write!(
                f,
                "shared region {region}: {size} bytes; each must be a non-zero multiple of 4 KiB up to {SHARED_STRIDE:#x}"
            ),
        }
    }
}

impl std::error::Error for LayoutError {}

/// The memory plan of one VM: `vcpus` vCPUs and shared regions of the given sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestLayout {
    vcpus: u32,
    shared: Vec<u64>,
}

impl GuestLayout {
    pub fn new(vcpus: u32, shared_sizes: &[u64]) -> Result<GuestLayout, LayoutError> {
        if vcpus == 0 || vcpus > MAX_VCPUS {
            return Err(LayoutError::Vcpus(vcpus));
        }
        if shared_sizes.len() > MAX_SHARED as usize {
            return Err(LayoutError::SharedCount(shared_sizes.len()));
        }
        for (region, &size) in shared_sizes.iter().enumerate() {
            if size == 0 || !size.is_multiple_of(PAGE) || size > SHARED_STRIDE {
                return Err(LayoutError::SharedSize { region, size });
            }
        }
        Ok(GuestLayout { vcpus, shared: shared_sizes.to_vec() })
    }
    pub fn vcpus(&self) -> u32 {
        self.vcpus
    }
    /// Bytes of main memory (slot 0).
    pub fn mem_size(&self) -> usize {
        mem_size(self.vcpus)
    }
    /// `(gpa, size)` of every shared region, in order.
    pub fn shared(&self) -> Vec<(u64, u64)> {
        self.shared.iter().enumerate().map(|(k, &size)| (shared_gpa(k as u32), size)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
        a.0 < b.0 + b.1 && b.0 < a.0 + a.1
    }

    /// Every per-vCPU area of every vCPU of an `n`-vCPU VM, as (start, len, what).
    fn areas(n: u32) -> Vec<(u64, u64, String)> {
        let mut v = vec![(IMAGE, IMAGE_MAX, "image".to_string()), (NOTIFY_LINES, 128, "lines".into())];
        for id in 0..n {
            v.push((params(id), PARAMS_STRIDE, format!("params {id}")));
            v.push((vif_page(id), PAGE, format!("vif {id}")));
            v.push((stack_top(id) - STACK_STRIDE, STACK_STRIDE, format!("stacks {id}")));
            v.push((results(id), RESULTS_STRIDE, format!("results {id}")));
            let (s, cap) = samples(id);
            v.push((s, cap * 8, format!("samples {id}")));
        }
        v
    }

    #[test]
    fn per_vcpu_areas_are_disjoint_and_inside_main_memory_for_every_vcpu_count() {
        for n in 1..=MAX_VCPUS {
            let a = areas(n);
            let mem = mem_size(n) as u64;
            for (i, x) in a.iter().enumerate() {
                assert!(x.0 + x.1 <= mem, "{n} vCPUs: {} ends at {:#x}, memory at {mem:#x}", x.2, x.0 + x.1);
                for y in &a[i + 1..] {
                    assert!(!overlaps((x.0, x.1), (y.0, y.1)), "{n} vCPUs: {} overlaps {}", x.2, y.2);
                }
            }
        }
    }

    #[test]
    fn two_vcpus_keep_the_historical_32_mib_and_more_vcpus_grow_main_memory() {
        assert_eq!(mem_size(1), 32 << 20);
        assert_eq!(mem_size(2), 32 << 20);
        // the third sample buffer used to run past the end of guest memory
        assert!(samples(2).0 + samples(2).1 * 8 <= mem_size(3) as u64);
        assert_eq!(mem_size(8), 100 << 20);
        assert_eq!(user_stack_top(0), 0x1f_0000);
        assert_eq!(params(1), 0x6100);
    }

    #[test]
    fn shared_regions_sit_between_main_memory_and_the_protected_slot() {
        let l = GuestLayout::new(3, &[2 << 20, 4096, SHARED_STRIDE]).unwrap();
        let s = l.shared();
        assert_eq!(s[0], (SHARED_GPA, 2 << 20));
        assert_eq!(s[1].0, SHARED_GPA + SHARED_STRIDE);
        for (i, a) in s.iter().enumerate() {
            assert!(a.0 >= l.mem_size() as u64 && a.0 + a.1 <= PROTECTED_GPA);
            for b in &s[i + 1..] {
                assert!(!overlaps(*a, *b));
            }
        }
        let full: Vec<u64> = vec![4096; MAX_SHARED as usize];
        let last = *GuestLayout::new(1, &full).unwrap().shared().last().unwrap();
        assert!(last.0 + SHARED_STRIDE <= PROTECTED_GPA);
    }

    #[test]
    fn bad_layouts_are_refused_with_the_reason() {
        assert_eq!(GuestLayout::new(0, &[]), Err(LayoutError::Vcpus(0)));
        assert_eq!(GuestLayout::new(9, &[]), Err(LayoutError::Vcpus(9)));
        assert_eq!(GuestLayout::new(1, &[100]), Err(LayoutError::SharedSize { region: 0, size: 100 }));
        assert!(GuestLayout::new(1, &[SHARED_STRIDE + 4096]).is_err());
        assert!(GuestLayout::new(1, &[4096; 17]).unwrap_err().to_string().contains("room for 16"));
    }
}
