//! [`SharedMemory`]: a memfd mapped MAP_SHARED, to be placed as a memslot in several VMs,
//! in this process or in VM worker processes that receive its fd.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use vm_memory::{FileOffset, MmapRegion};

use super::error::VmmError;

const HUGE_PAGE: usize = 2 << 20;

/// Which pages back a shared region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// Ordinary 4 KiB shmem pages.
    Pages4K,
    /// 2 MiB hugetlbfs pages (MFD_HUGETLB | MFD_HUGE_2MB), from the host's reserved pool.
    Huge2M,
}

/// Memory shared between VMs and processes: one memfd, mapped once (MAP_SHARED) in this
/// process. Every VM that adds it gets a memslot on the same host address, so all of them
/// (and the host) see the same bytes; another process maps the same pages from the fd.
#[derive(Clone)]
pub struct SharedMemory {
    region: Arc<MmapRegion>,
    backing: Backing,
}

/// Free 2 MiB hugetlb pages (HugePages_Free of /proc/meminfo when the default size is
/// 2 MiB, else the per-size sysfs counter).
pub fn free_huge_pages_2m() -> u64 {
    std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

impl SharedMemory {
    /// A new zeroed region of `size` bytes backed by 4 KiB pages.
    pub fn new(size: usize) -> Result<SharedMemory, VmmError> {
        SharedMemory::with_backing(size, Backing::Pages4K)
    }

    /// A new zeroed region of `size` bytes. [`Backing::Huge2M`] needs `size` to be a
    /// multiple of 2 MiB and that many free hugetlb pages; otherwise it is refused as
    /// unsupported with the reason (the caller decides whether 4 KiB pages will do).
    pub fn with_backing(size: usize, backing: Backing) -> Result<SharedMemory, VmmError> {
        const WHO: &str = "shared memory";
        let mut flags = libc::MFD_CLOEXEC;
        if backing == Backing::Huge2M {
            if !size.is_multiple_of(HUGE_PAGE) {
                return Err(VmmError::setup(WHO, format!("{size} bytes is not a multiple of 2 MiB")));
            }
            let free = free_huge_pages_2m();
            if free < (size / HUGE_PAGE) as u64 {
                return Err(VmmError::Unsupported(format!(
                    "{size} bytes of 2 MiB hugepages asked for, {free} free (vm.nr_hugepages / \
                     /sys/kernel/mm/hugepages/hugepages-2048kB)"
                )));
            }
            flags |= libc::MFD_HUGETLB | libc::MFD_HUGE_2MB;
        }
        // SAFETY: memfd_create reads the NUL-terminated name and returns a new fd or -1.
        let fd = unsafe { libc::memfd_create(c"ivbench-shared".as_ptr(), flags) };
        if fd < 0 {
            return Err(VmmError::last_os(WHO, "memfd_create"));
        }
        // SAFETY: fd was just created by memfd_create and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let len = libc::off_t::try_from(size).map_err(|_| VmmError::setup(WHO, format!("{size} bytes")))?;
        // SAFETY: ftruncate on an fd owned here; no memory is touched.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len) } != 0 {
            return Err(VmmError::last_os(WHO, "ftruncate(memfd)"));
        }
        SharedMemory::map(fd, size, backing)
    }

    /// Maps a region another process created and passed over a socket.
    pub fn from_fd(fd: OwnedFd, size: usize, backing: Backing) -> Result<SharedMemory, VmmError> {
        SharedMemory::map(fd, size, backing)
    }

    fn map(fd: OwnedFd, size: usize, backing: Backing) -> Result<SharedMemory, VmmError> {
        let file = std::fs::File::from(fd);
        let region = MmapRegion::from_file(FileOffset::new(file, 0), size)
            .map_err(|e| VmmError::setup("shared memory", format!("mmap(memfd, {size} bytes, {backing:?}): {e}")))?;
        Ok(SharedMemory { region: Arc::new(region), backing })
    }

    pub fn size(&self) -> usize {
        self.region.size()
    }
    pub fn backing(&self) -> Backing {
        self.backing
    }
    pub fn host_addr(&self) -> *mut u8 {
        self.region.as_ptr()
    }
    /// The memfd (to pass to a worker process).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.region.file_offset().expect("a SharedMemory is always file backed").file().as_fd()
    }
    pub(crate) fn region(&self) -> &Arc<MmapRegion> {
        &self.region
    }
    /// Host view of the aligned u64 at byte `off`.
    pub fn atomic(&self, off: usize) -> &AtomicU64 {
        assert!(off.is_multiple_of(8) && off + 8 <= self.size(), "u64 at {off:#x} of a {}-byte region", self.size());
        // SAFETY: `off` is 8-aligned and inside the mapping, which lives as long as `self`;
        // guests and hosts only access the region with naturally aligned 8-byte accesses.
        unsafe { &*(self.host_addr().add(off) as *const AtomicU64) }
    }
}
