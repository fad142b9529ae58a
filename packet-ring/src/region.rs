//! An owned, zeroed, page-aligned mapping for a ring: what the host threads and the tests
//! share. (VMs map the same layout from a memfd their VMM shares.)

use std::io;
use std::ptr::NonNull;

pub struct Region {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; the ring protocol, not this
// type, decides who writes which part of it.
unsafe impl Send for Region {}
// SAFETY: as above; a shared `&Region` only hands out the base pointer.
unsafe impl Sync for Region {}

impl Region {
    /// A zeroed shared anonymous mapping of `len` bytes (rounded up to a page).
    pub fn anonymous(len: usize) -> io::Result<Region> {
        let len = len.max(1).div_ceil(crate::layout::PAGE) * crate::layout::PAGE;
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing
        // aliases nothing; the result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(Region { base, len })
    }
    pub fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly the mapping made in `anonymous`, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
