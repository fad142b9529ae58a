//! The shared region's layout: one definition that the host threads, the tests and (later)
//! the guest code take their offsets from. Everything is a `pub const` or a `#[repr(C)]`
//! struct whose offsets are asserted at compile time, so the assembly side can be written
//! against plain numbers.
//!
//! ```text
//! offset 0                      RingHeader.config    (magic, version, slots, sizes; written once)
//! PRODUCER_LINE_OFFSET  (64)    RingHeader.producer  (head: next slot the producer fills)
//! CONSUMER_LINE_OFFSET (128)    RingHeader.consumer  (tail: next slot the consumer reads)
//! DESC_OFFSET          (192)    slots x Desc         (buffer offset + frame length)
//! buf_offset (page aligned)     slots x BUF_SIZE     buffer pool, buffer i belongs to slot i
//! ```
//! The producer and consumer indices live on cache lines of their own so that each side
//! writes only its own line; each side keeps a private copy of the other's index and
//! re-reads the shared one only when that copy says full (producer) or empty (consumer).
//! Indices are free-running u32 counters; a slot is `index & (slots - 1)`.

use std::mem::{align_of, offset_of, size_of};
use std::sync::atomic::AtomicU32;

pub const CACHE_LINE: usize = 64;
/// `"IVRG"` little-endian: a region that does not start with it is not a ring.
pub const MAGIC: u32 = u32::from_le_bytes(*b"IVRG");
pub const VERSION: u32 = 1;
/// Bytes per buffer: one maximum-size Ethernet frame (1518 B) rounded up to a power of two.
pub const BUF_SIZE: usize = 2048;
/// The largest frame a buffer carries.
pub const MAX_FRAME: usize = 1518;
/// Slots of the default ring: 256 x 2 KiB buffers = 512 KiB, within one core's L2.
pub const DEFAULT_SLOTS: u32 = 256;
pub const MIN_SLOTS: u32 = 2;
pub const MAX_SLOTS: u32 = 1 << 16;
pub const PAGE: usize = 4096;

/// Written once by whoever creates the region, before either side starts.
#[repr(C)]
#[derive(Debug)]
pub struct Config {
    pub magic: u32,
    pub version: u32,
    /// Ring slots, a power of two.
    pub slots: u32,
    pub buf_size: u32,
    pub desc_offset: u32,
    pub buf_offset: u32,
    pub region_size: u64,
}

/// The producer's line: only the producer writes it.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct ProducerLine {
    /// Slots filled so far (free-running); published with release ordering after the
    /// descriptors and buffers it covers were written.
    pub head: AtomicU32,
}

/// The consumer's line: only the consumer writes it.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct ConsumerLine {
    /// Slots the consumer is done with (free-running); published with release ordering
    /// after it stopped reading their buffers, which hands them back to the producer.
    pub tail: AtomicU32,
}

#[repr(C, align(64))]
#[derive(Debug)]
pub struct RingHeader {
    pub config: Config,
    pub producer: ProducerLine,
    pub consumer: ConsumerLine,
}

/// One descriptor: where the frame is (an offset from the region's start, so that it
/// means the same in every address space that maps the region) and how long it is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Desc {
    pub offset: u32,
    pub len: u32,
}

pub const CONFIG_OFFSET: usize = 0;
pub const PRODUCER_LINE_OFFSET: usize = 64;
pub const CONSUMER_LINE_OFFSET: usize = 128;
pub const HEAD_OFFSET: usize = PRODUCER_LINE_OFFSET;
pub const TAIL_OFFSET: usize = CONSUMER_LINE_OFFSET;
pub const HEADER_SIZE: usize = 192;
pub const DESC_OFFSET: usize = HEADER_SIZE;
pub const DESC_SIZE: usize = 8;
pub const DESC_OFFSET_FIELD: usize = 0;
pub const DESC_LEN_FIELD: usize = 4;

const _: () = {
    assert!(offset_of!(RingHeader, config) == CONFIG_OFFSET);
    assert!(offset_of!(RingHeader, producer) == PRODUCER_LINE_OFFSET);
    assert!(offset_of!(RingHeader, consumer) == CONSUMER_LINE_OFFSET);
    assert!(offset_of!(RingHeader, producer) + offset_of!(ProducerLine, head) == HEAD_OFFSET);
    assert!(offset_of!(RingHeader, consumer) + offset_of!(ConsumerLine, tail) == TAIL_OFFSET);
    assert!(size_of::<RingHeader>() == HEADER_SIZE);
    assert!(align_of::<RingHeader>() == CACHE_LINE);
    assert!(size_of::<Config>() <= CACHE_LINE);
    assert!(size_of::<ProducerLine>() == CACHE_LINE && size_of::<ConsumerLine>() == CACHE_LINE);
    assert!(size_of::<Desc>() == DESC_SIZE);
    assert!(offset_of!(Desc, offset) == DESC_OFFSET_FIELD && offset_of!(Desc, len) == DESC_LEN_FIELD);
    assert!(BUF_SIZE >= MAX_FRAME && BUF_SIZE.is_power_of_two() && BUF_SIZE % CACHE_LINE == 0);
    assert!(DEFAULT_SLOTS.is_power_of_two() && MAX_SLOTS.is_power_of_two());
};

/// The offsets of one ring size: a pure function of the slot count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub slots: u32,
    pub desc_offset: usize,
    pub buf_offset: usize,
    pub region_size: usize,
}

impl Layout {
    pub const fn new(slots: u32) -> Result<Layout, &'static str> {
        if slots < MIN_SLOTS || slots > MAX_SLOTS || !slots.is_power_of_two() {
            return Err("ring slots must be a power of two in 2..=65536");
        }
        let desc_end = DESC_OFFSET + slots as usize * DESC_SIZE;
        let buf_offset = desc_end.div_ceil(PAGE) * PAGE;
        let region_size = buf_offset + slots as usize * BUF_SIZE;
        Ok(Layout { slots, desc_offset: DESC_OFFSET, buf_offset, region_size })
    }
    /// The byte offset of slot `index`'s buffer.
    pub const fn buf(&self, index: u32) -> usize {
        self.buf_offset + (index & (self.slots - 1)) as usize * BUF_SIZE
    }
    /// The byte offset of slot `index`'s descriptor.
    pub const fn desc(&self, index: u32) -> usize {
        self.desc_offset + (index & (self.slots - 1)) as usize * DESC_SIZE
    }
    pub const fn mask(&self) -> u32 {
        self.slots - 1
    }
}

/// The layout of the default ring, for code that wants plain constants.
pub const DEFAULT_LAYOUT: Layout = match Layout::new(DEFAULT_SLOTS) {
    Ok(l) => l,
    Err(_) => panic!("default slots"),
};
pub const DEFAULT_BUF_OFFSET: usize = DEFAULT_LAYOUT.buf_offset;
pub const DEFAULT_REGION_SIZE: usize = DEFAULT_LAYOUT.region_size;
const _: () = assert!(DEFAULT_BUF_OFFSET == 4096 && DEFAULT_REGION_SIZE == 4096 + 256 * 2048);
const _: () = assert!(DEFAULT_REGION_SIZE <= u32::MAX as usize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_page_aligned_and_bounded() {
        for slots in [2u32, 4, 256, 512, 4096, MAX_SLOTS] {
            let l = Layout::new(slots).unwrap();
            assert_eq!(l.buf_offset % PAGE, 0);
            assert!(l.buf_offset >= DESC_OFFSET + slots as usize * DESC_SIZE);
            assert_eq!(l.region_size, l.buf_offset + slots as usize * BUF_SIZE);
            assert_eq!(l.buf(slots), l.buf(0), "indices wrap at the slot count");
            assert_eq!(l.buf(slots - 1) + BUF_SIZE, l.region_size);
            assert_eq!(l.desc(slots - 1) + DESC_SIZE, DESC_OFFSET + slots as usize * DESC_SIZE);
        }
        for bad in [0u32, 1, 3, 100, MAX_SLOTS * 2] {
            assert!(Layout::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn indices_sit_on_their_own_cache_lines() {
        assert_ne!(HEAD_OFFSET / CACHE_LINE, TAIL_OFFSET / CACHE_LINE);
        assert_ne!(HEAD_OFFSET / CACHE_LINE, CONFIG_OFFSET / CACHE_LINE);
        assert_eq!(DESC_OFFSET % CACHE_LINE, 0);
    }
}
