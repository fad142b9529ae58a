//! The single-producer/single-consumer descriptor ring over a shared region laid out as
//! [`crate::layout`] says. Each side owns one index line and caches the other's index,
//! reading the shared copy only when its cache says full (producer) or empty (consumer);
//! both publish their index once per batch, not once per packet.
//!
//! Ordering: the producer writes buffers and descriptors, then stores `head` with release
//! ordering; the consumer loads `head` with acquire ordering before reading them. The
//! consumer stores `tail` with release ordering once it stopped reading the buffers; the
//! producer loads `tail` with acquire ordering before reusing them.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::layout::{self, Config, Desc, Layout, BUF_SIZE, MAGIC, VERSION};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingError {
    /// The region is too small, misaligned or does not carry a valid header.
    BadRegion(String),
    /// The peer published an index that no correct peer could (more slots than exist).
    Overrun { head: u32, tail: u32, slots: u32 },
}

impl std::fmt::Display for RingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RingError::BadRegion(why) => write!(f, "not a packet ring: {why}"),
            RingError::Overrun { head, tail, slots } => {
                write!(f, "producer index {head} is more than {slots} slots ahead of consumer index {tail}: the peer broke the ring protocol")
            }
        }
    }
}

impl std::error::Error for RingError {}

/// A ring in a mapped region. It borrows nothing: the creator keeps the mapping alive for
/// as long as any view of it is used.
#[derive(Clone, Copy, Debug)]
pub struct RingView {
    base: *mut u8,
    layout: Layout,
}

// SAFETY: a view is a pointer plus numbers; which side may write what is the ring
// protocol's business (one producer, one consumer), enforced by Producer/Consumer.
unsafe impl Send for RingView {}
// SAFETY: as above.
unsafe impl Sync for RingView {}

impl RingView {
    /// Writes a fresh header for `layout` into the region and returns its view.
    ///
    /// # Safety
    /// `base` must be valid for reads and writes of `len` bytes for as long as the view or
    /// anything made from it is used, 64-byte aligned, and not in use by another ring.
    pub unsafe fn init(base: *mut u8, len: usize, layout: Layout) -> Result<RingView, RingError> {
        check_region(base, len, &layout)?;
        let cfg = Config {
            magic: MAGIC,
            version: VERSION,
            slots: layout.slots,
            buf_size: BUF_SIZE as u32,
            desc_offset: layout.desc_offset as u32,
            buf_offset: layout.buf_offset as u32,
            region_size: layout.region_size as u64,
        };
        // SAFETY: the caller hands over the region; check_region proved it holds the
        // header, which is 64-byte aligned at its start.
        unsafe {
            base.add(layout::CONFIG_OFFSET).cast::<Config>().write(cfg);
            (*base.add(layout::HEAD_OFFSET).cast::<AtomicU32>()).store(0, Ordering::Relaxed);
            (*base.add(layout::TAIL_OFFSET).cast::<AtomicU32>()).store(0, Ordering::Release);
        }
        Ok(RingView { base, layout })
    }

    /// Opens a ring someone else initialised, checking its header against the region.
    ///
    /// # Safety
    /// As for [`RingView::init`], except that the header is the creator's.
    pub unsafe fn open(base: *mut u8, len: usize) -> Result<RingView, RingError> {
        if len < layout::HEADER_SIZE {
            return Err(RingError::BadRegion(format!(
                "{len} bytes cannot hold the {}-byte header",
                layout::HEADER_SIZE
            )));
        }
        // SAFETY: the region holds the header (checked above) and the caller vouches for it.
        let cfg = unsafe { base.cast::<Config>().read_volatile() };
        if cfg.magic != MAGIC || cfg.version != VERSION {
            return Err(RingError::BadRegion(format!(
                "magic {:#x} version {} (want {MAGIC:#x} version {VERSION})",
                cfg.magic, cfg.version
            )));
        }
        let layout = Layout::new(cfg.slots).map_err(|e| RingError::BadRegion(e.into()))?;
        if (cfg.buf_size as usize, cfg.desc_offset as usize, cfg.buf_offset as usize, cfg.region_size)
            != (BUF_SIZE, layout.desc_offset, layout.buf_offset, layout.region_size as u64)
        {
            return Err(RingError::BadRegion(format!(
                "header sizes {cfg:?} do not match the layout of {} slots",
                cfg.slots
            )));
        }
        check_region(base, len, &layout)?;
        Ok(RingView { base, layout })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn head(&self) -> &AtomicU32 {
        // SAFETY: HEAD_OFFSET lies inside the checked header and is 4-byte aligned; the
        // index is only ever accessed atomically.
        unsafe { &*self.base.add(layout::HEAD_OFFSET).cast::<AtomicU32>() }
    }

    fn tail(&self) -> &AtomicU32 {
        // SAFETY: as for head.
        unsafe { &*self.base.add(layout::TAIL_OFFSET).cast::<AtomicU32>() }
    }
}

fn check_region(base: *mut u8, len: usize, layout: &Layout) -> Result<(), RingError> {
    if base.is_null() || base as usize % layout::CACHE_LINE != 0 {
        return Err(RingError::BadRegion(format!("base {base:p} is not 64-byte aligned")));
    }
    if len < layout.region_size {
        return Err(RingError::BadRegion(format!(
            "{len} bytes cannot hold a {}-slot ring ({} bytes)",
            layout.slots, layout.region_size
        )));
    }
    Ok(())
}

/// The producer side. Only one may exist per ring.
pub struct Producer {
    ring: RingView,
    head: u32,
    cached_tail: u32,
    published: u32,
}

impl Producer {
    pub fn new(ring: RingView) -> Producer {
        let head = ring.head().load(Ordering::Relaxed);
        let cached_tail = ring.tail().load(Ordering::Acquire);
        Producer { ring, head, cached_tail, published: head }
    }

    /// Fills the next slot with `len` bytes written by `write` (given the buffer's start),
    /// or returns false, touching nothing, when the ring is full. The slot becomes visible
    /// to the consumer at the next [`Producer::publish`].
    #[inline]
    pub fn try_push(&mut self, len: u16, write: impl FnOnce(*mut u8)) -> bool {
        let slots = self.ring.layout.slots;
        if self.head.wrapping_sub(self.cached_tail) >= slots {
            self.cached_tail = self.ring.tail().load(Ordering::Acquire);
            if self.head.wrapping_sub(self.cached_tail) >= slots {
                return false;
            }
        }
        let off = self.ring.layout.buf(self.head);
        // SAFETY: the slot lies between tail and tail + slots, so the consumer released it
        // (acquire load of tail above or earlier) and will not read it before the next
        // release store of head; buffer and descriptor lie inside the checked region.
        unsafe {
            write(self.ring.base.add(off));
            self.ring
                .base
                .add(self.ring.layout.desc(self.head))
                .cast::<Desc>()
                .write(Desc { offset: off as u32, len: u32::from(len) });
        }
        self.head = self.head.wrapping_add(1);
        true
    }

    /// Slots filled but not yet published.
    #[inline]
    pub fn unpublished(&self) -> u32 {
        self.head.wrapping_sub(self.published)
    }

    /// Makes every filled slot visible to the consumer (one index store).
    #[inline]
    pub fn publish(&mut self) {
        if self.head != self.published {
            self.ring.head().store(self.head, Ordering::Release);
            self.published = self.head;
        }
    }
}

/// One frame as the consumer sees it in the shared buffer.
#[derive(Clone, Copy, Debug)]
pub struct RawFrame {
    pub ptr: *const u8,
    pub len: usize,
}

/// The consumer side. Only one may exist per ring.
pub struct Consumer {
    ring: RingView,
    tail: u32,
    cached_head: u32,
    released: u32,
}

impl Consumer {
    pub fn new(ring: RingView) -> Consumer {
        let tail = ring.tail().load(Ordering::Relaxed);
        let cached_head = ring.head().load(Ordering::Acquire);
        Consumer { ring, tail, cached_head, released: tail }
    }

    /// Frames ready to read; re-reads the producer's index only when the cached copy says
    /// empty.
    #[inline]
    pub fn available(&mut self) -> Result<u32, RingError> {
        if self.cached_head == self.tail {
            self.cached_head = self.ring.head().load(Ordering::Acquire);
        }
        let n = self.cached_head.wrapping_sub(self.released);
        if n > self.ring.layout.slots {
            return Err(RingError::Overrun {
                head: self.cached_head,
                tail: self.released,
                slots: self.ring.layout.slots,
            });
        }
        Ok(self.cached_head.wrapping_sub(self.tail))
    }

    /// The next unread frame, if `available` said there is one; None when its descriptor
    /// points outside the buffer pool (a corrupt descriptor: the caller counts it, and
    /// must still [`Consumer::advance`] past it).
    #[inline]
    pub fn peek(&self) -> Option<RawFrame> {
        let l = &self.ring.layout;
        // SAFETY: the descriptor slot lies inside the checked region; the producer
        // published it (acquire load of head) and will not rewrite it before the consumer
        // releases the slot.
        let d = unsafe { self.ring.base.add(l.desc(self.tail)).cast::<Desc>().read_volatile() };
        let (off, len) = (d.offset as usize, d.len as usize);
        let in_pool = off >= l.buf_offset
            && (off - l.buf_offset) % BUF_SIZE == 0
            && len <= BUF_SIZE
            && off + len <= l.region_size;
        // SAFETY: off + len was just checked to lie inside the region.
        in_pool.then(|| RawFrame { ptr: unsafe { self.ring.base.add(off) }.cast_const(), len })
    }

    /// Moves past the frame just read. Its buffer stays the consumer's (zero-copy reads
    /// are valid) until [`Consumer::release`].
    #[inline]
    pub fn advance(&mut self) {
        self.tail = self.tail.wrapping_add(1);
    }

    /// Hands every read slot back to the producer (one index store).
    #[inline]
    pub fn release(&mut self) {
        if self.tail != self.released {
            self.ring.tail().store(self.tail, Ordering::Release);
            self.released = self.tail;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::Region;

    /// Writes the first byte of a buffer the producer handed out.
    fn put(b: *mut u8, v: u8) {
        // SAFETY: try_push passes the start of a BUF_SIZE buffer the producer owns.
        unsafe { *b = v }
    }

    /// The first byte of a frame peek returned.
    fn first(f: RawFrame) -> u8 {
        // SAFETY: peek returns only frames inside the pool, at least one byte long here.
        unsafe { *f.ptr }
    }

    fn ring(slots: u32) -> (Region, RingView) {
        let l = Layout::new(slots).unwrap();
        let r = Region::anonymous(l.region_size).unwrap();
        // SAFETY: the region is fresh, page aligned and as large as the layout.
        let v = unsafe { RingView::init(r.base(), r.len(), l) }.unwrap();
        (r, v)
    }

    #[test]
    fn fills_to_capacity_then_refuses_until_released() {
        let (_r, v) = ring(4);
        let (mut p, mut c) = (Producer::new(v), Consumer::new(v));
        for i in 0..4u8 {
            assert!(p.try_push(64, |b| put(b, i)));
        }
        assert!(!p.try_push(64, |_| panic!("a full ring must not hand out a buffer")));
        assert_eq!(c.available().unwrap(), 0, "nothing is visible before publication");
        p.publish();
        assert_eq!(c.available().unwrap(), 4);
        for i in 0..2u8 {
            let f = c.peek().unwrap();
            assert_eq!((first(f), f.len), (i, 64));
            c.advance();
        }
        assert!(!p.try_push(64, |_| panic!("not released yet")));
        c.release();
        assert!(p.try_push(64, |b| put(b, 9)));
        assert!(p.try_push(64, |b| put(b, 10)));
        assert!(!p.try_push(64, |_| panic!("full again")));
        p.publish();
        assert_eq!(c.available().unwrap(), 2, "cached head still says 2 left of the first batch");
    }

    #[test]
    fn indices_wrap_around_u32() {
        let (_r, v) = ring(8);
        // Both indices near the wrap, set before either side exists.
        v.head().store(u32::MAX - 3, Ordering::Relaxed);
        v.tail().store(u32::MAX - 3, Ordering::Relaxed);
        let (mut p, mut c) = (Producer::new(v), Consumer::new(v));
        let mut got = Vec::new();
        for round in 0..5u8 {
            for i in 0..8u8 {
                assert!(p.try_push(100, |b| put(b, round * 8 + i)));
            }
            p.publish();
            while c.available().unwrap() > 0 {
                got.push(first(c.peek().unwrap()));
                c.advance();
            }
            c.release();
        }
        assert_eq!(got, (0..40).collect::<Vec<u8>>());
    }

    #[test]
    fn a_lying_peer_is_an_error_not_a_wild_read() {
        let (_r, v) = ring(4);
        let mut c = Consumer::new(v);
        v.head().store(9, Ordering::Release);
        assert!(matches!(c.available(), Err(RingError::Overrun { .. })));
        v.head().store(1, Ordering::Release);
        let mut c = Consumer::new(v);
        // SAFETY: test-only: a descriptor pointing into the header.
        unsafe { v.base.add(v.layout.desc(0)).cast::<Desc>().write(Desc { offset: 0, len: 64 }) };
        assert_eq!(c.available().unwrap(), 1);
        assert!(c.peek().is_none());
        unsafe {
            v.base.add(v.layout.desc(0)).cast::<Desc>().write(Desc { offset: v.layout.buf(3) as u32, len: 4000 })
        };
        assert!(c.peek().is_none(), "a length beyond the buffer");
        c.advance();
        c.release();
    }

    #[test]
    fn open_checks_the_header() {
        let (r, _v) = ring(16);
        // SAFETY: the region outlives the views made here.
        let v = unsafe { RingView::open(r.base(), r.len()) }.unwrap();
        assert_eq!(v.layout().slots, 16);
        // SAFETY: a length shorter than the mapping is always valid to read.
        assert!(unsafe { RingView::open(r.base(), 100) }.is_err());
        let z = Region::anonymous(8192).unwrap();
        // SAFETY: a fresh zeroed mapping of the stated size.
        let e = unsafe { RingView::open(z.base(), z.len()) }.unwrap_err();
        assert!(e.to_string().contains("magic"), "{e}");
    }
}
