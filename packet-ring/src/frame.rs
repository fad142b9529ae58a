//! Test frames: Ethernet frames whose payload carries a sequence number, a TSC send stamp
//! and a checksum over the whole frame.
//!
//! ```text
//! 0   dst MAC (6)      6   src MAC (6)      12  ethertype (2, big-endian, ETHERTYPE)
//! 14  frame length (2, little-endian)       16  sequence number (8)
//! 24  TSC send stamp (8)                    32  checksum (8)
//! 40  fill: byte i of the frame is FILL_SEED + i (mod 256), up to the frame's length
//! ```
//! The checksum is a position-weighted sum of the frame's 8-byte little-endian words
//! (the checksum word counted as 0, a short last word zero-padded): word `i` is multiplied
//! by the odd number `2i + 1`, which is invertible modulo 2^64, so any change confined to
//! one word, and any swap of two different words, changes it. It is linear in the words,
//! so the generator computes it in O(1) per frame from a template's sum plus the weighted
//! sequence and stamp. The sink compares every other byte with the template of that length
//! (one memcmp) and then needs only the O(1) check of sequence, stamp and checksum, which
//! together is the same as recomputing the checksum over every byte, and stricter.

/// Locally administered addresses, never seen outside the ring.
pub const DST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
pub const SRC_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
/// IEEE 802 "local experimental" ethertype.
pub const ETHERTYPE: u16 = 0x88B5;

pub const DST_OFFSET: usize = 0;
pub const SRC_OFFSET: usize = 6;
pub const ETHERTYPE_OFFSET: usize = 12;
pub const LEN_OFFSET: usize = 14;
pub const SEQ_OFFSET: usize = 16;
pub const TSC_OFFSET: usize = 24;
pub const CSUM_OFFSET: usize = 32;
pub const FILL_OFFSET: usize = 40;
pub const FILL_SEED: u8 = 0x5A;
/// Word weights of the sequence number and the stamp in the checksum.
pub const SEQ_WEIGHT: u64 = weight(SEQ_OFFSET / 8);
pub const TSC_WEIGHT: u64 = weight(TSC_OFFSET / 8);
pub const CSUM_WEIGHT: u64 = weight(CSUM_OFFSET / 8);

/// The checksum weight of word `i`.
pub const fn weight(i: usize) -> u64 {
    2 * i as u64 + 1
}
/// The smallest frame: Ethernet's minimum (60 B + 4 B FCS).
pub const MIN_FRAME: usize = 64;
pub use crate::layout::MAX_FRAME;

const _: () = assert!(SEQ_OFFSET % 8 == 0 && TSC_OFFSET % 8 == 0 && CSUM_OFFSET % 8 == 0 && FILL_OFFSET <= MIN_FRAME);

/// The position-weighted word sum of `bytes` with the checksum word taken as 0.
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut sum = 0u64;
    let mut chunks = bytes.chunks_exact(8);
    let mut i = 0;
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8-byte chunk"));
        sum = sum.wrapping_add(w.wrapping_mul(weight(i)));
        i += 1;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        sum = sum.wrapping_add(u64::from_le_bytes(last).wrapping_mul(weight(i)));
    }
    // The checksum word itself counts as 0.
    if bytes.len() >= CSUM_OFFSET + 8 {
        let c = u64::from_le_bytes(bytes[CSUM_OFFSET..CSUM_OFFSET + 8].try_into().expect("8 bytes"));
        sum = sum.wrapping_sub(c.wrapping_mul(CSUM_WEIGHT));
    }
    sum
}

/// A frame of one length with sequence 0, stamp 0 and checksum 0, and its checksum base:
/// what the generator copies and patches for every packet.
#[derive(Clone, Debug)]
pub struct Template {
    pub bytes: Vec<u8>,
    /// `checksum(bytes)` with sequence and stamp 0.
    pub base: u64,
}

impl Template {
    pub fn new(len: usize) -> Template {
        assert!((MIN_FRAME..=MAX_FRAME).contains(&len), "frame length {len} outside {MIN_FRAME}..={MAX_FRAME}");
        let mut b = vec![0u8; len];
        b[DST_OFFSET..DST_OFFSET + 6].copy_from_slice(&DST_MAC);
        b[SRC_OFFSET..SRC_OFFSET + 6].copy_from_slice(&SRC_MAC);
        b[ETHERTYPE_OFFSET..ETHERTYPE_OFFSET + 2].copy_from_slice(&ETHERTYPE.to_be_bytes());
        b[LEN_OFFSET..LEN_OFFSET + 2].copy_from_slice(&(len as u16).to_le_bytes());
        for (i, x) in b.iter_mut().enumerate().skip(FILL_OFFSET) {
            *x = FILL_SEED.wrapping_add(i as u8);
        }
        let base = checksum(&b);
        Template { bytes: b, base }
    }
    /// The checksum of this template carrying `seq` and `tsc`.
    #[inline]
    pub fn checksum_for(&self, seq: u64, tsc: u64) -> u64 {
        self.base.wrapping_add(seq.wrapping_mul(SEQ_WEIGHT)).wrapping_add(tsc.wrapping_mul(TSC_WEIGHT))
    }
    /// Writes this frame carrying `seq` and `tsc` to `dst`, which must hold `len` bytes.
    ///
    /// # Safety
    /// `dst` must be valid for `self.bytes.len()` bytes of writes that no one else reads
    /// or writes meanwhile (a ring buffer the producer owns).
    #[inline]
    pub unsafe fn write_to(&self, dst: *mut u8, seq: u64, tsc: u64) {
        let csum = self.checksum_for(seq, tsc);
        // SAFETY: the caller guarantees `dst` holds len bytes; the template is at least
        // MIN_FRAME bytes long, so the patched fields lie inside it; the unaligned writes
        // need no alignment.
        unsafe {
            std::ptr::copy_nonoverlapping(self.bytes.as_ptr(), dst, self.bytes.len());
            dst.add(SEQ_OFFSET).cast::<u64>().write_unaligned(seq.to_le());
            dst.add(TSC_OFFSET).cast::<u64>().write_unaligned(tsc.to_le());
            dst.add(CSUM_OFFSET).cast::<u64>().write_unaligned(csum.to_le());
        }
    }
}

/// What the sink found in one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    Good { seq: u64, tsc: u64 },
    Corrupt(Corruption),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// The descriptor's length is not one the trial sends, or differs from the frame's
    /// own length field.
    Length,
    /// Wrong MAC addresses or ethertype.
    Header,
    /// A payload byte differs from its pattern.
    Payload,
    /// The checksum does not match sequence number and stamp.
    Checksum,
}

/// The templates of every length a trial sends: the generator's source and the sink's
/// reference.
#[derive(Clone, Debug)]
pub struct Templates {
    by_len: Vec<Option<Template>>,
}

impl Templates {
    pub fn new(size: FrameSize) -> Templates {
        let mut by_len = vec![None; MAX_FRAME + 1];
        for len in size.lengths() {
            by_len[len as usize] = Some(Template::new(len as usize));
        }
        Templates { by_len }
    }
    /// The template of one length, if the trial sends that length.
    #[inline]
    pub fn get(&self, len: usize) -> Option<&Template> {
        self.by_len.get(len).and_then(Option::as_ref)
    }
    /// Verifies every byte of a received frame: length, header and fill against the
    /// template of its length, then sequence and stamp against the checksum.
    #[inline]
    pub fn verify(&self, frame: &[u8]) -> Check {
        let len = frame.len();
        let Some(t) = self.get(len) else {
            return Check::Corrupt(Corruption::Length);
        };
        if frame[LEN_OFFSET..SEQ_OFFSET] != t.bytes[LEN_OFFSET..SEQ_OFFSET] {
            return Check::Corrupt(Corruption::Length);
        }
        if frame[..LEN_OFFSET] != t.bytes[..LEN_OFFSET] {
            return Check::Corrupt(Corruption::Header);
        }
        if frame[FILL_OFFSET..] != t.bytes[FILL_OFFSET..] {
            return Check::Corrupt(Corruption::Payload);
        }
        let word = |o: usize| u64::from_le_bytes(frame[o..o + 8].try_into().expect("8 bytes"));
        let (seq, tsc) = (word(SEQ_OFFSET), word(TSC_OFFSET));
        if t.checksum_for(seq, tsc) != word(CSUM_OFFSET) {
            return Check::Corrupt(Corruption::Checksum);
        }
        Check::Good { seq, tsc }
    }
}

/// Frame sizes of a trial: one fixed length, or IMIX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameSize {
    Fixed(u16),
    /// 7:4:1 of 64, 570 and 1518 B (the "simple IMIX"), in a fixed 12-frame cycle.
    Imix,
}

/// The simple IMIX cycle: 7 x 64, 4 x 570, 1 x 1518, interleaved so that no burst of large
/// frames arrives together.
pub const IMIX_CYCLE: [u16; 12] = [64, 570, 64, 64, 570, 64, 1518, 64, 570, 64, 64, 570];
/// The sizes of the default sweep's points.
pub const STANDARD_SIZES: [&str; 7] = ["64", "128", "256", "512", "1024", "1518", "imix"];

const _: () = {
    let mut n64 = 0;
    let mut n570 = 0;
    let mut n1518 = 0;
    let mut i = 0;
    while i < IMIX_CYCLE.len() {
        match IMIX_CYCLE[i] {
            64 => n64 += 1,
            570 => n570 += 1,
            1518 => n1518 += 1,
            _ => panic!("IMIX sizes are 64, 570, 1518"),
        }
        i += 1;
    }
    assert!(n64 == 7 && n570 == 4 && n1518 == 1);
};

impl FrameSize {
    pub fn parse(text: &str) -> Result<FrameSize, String> {
        if text.eq_ignore_ascii_case("imix") {
            return Ok(FrameSize::Imix);
        }
        let n: usize =
            text.trim().parse().map_err(|_| format!("size `{text}` is neither a frame length in bytes nor `imix`"))?;
        if !(MIN_FRAME..=MAX_FRAME).contains(&n) {
            return Err(format!("size {n} is outside the Ethernet frame lengths {MIN_FRAME}..={MAX_FRAME}"));
        }
        Ok(FrameSize::Fixed(n as u16))
    }
    /// The distinct lengths, each with its templates built once.
    pub fn lengths(&self) -> Vec<u16> {
        match self {
            FrameSize::Fixed(n) => vec![*n],
            FrameSize::Imix => vec![64, 570, 1518],
        }
    }
    /// The length of the `seq`-th frame.
    #[inline]
    pub fn len_of(&self, seq: u64) -> u16 {
        match self {
            FrameSize::Fixed(n) => *n,
            FrameSize::Imix => IMIX_CYCLE[(seq % IMIX_CYCLE.len() as u64) as usize],
        }
    }
    /// Mean frame length in bytes.
    pub fn mean_len(&self) -> f64 {
        match self {
            FrameSize::Fixed(n) => f64::from(*n),
            FrameSize::Imix => IMIX_CYCLE.iter().map(|&n| f64::from(n)).sum::<f64>() / IMIX_CYCLE.len() as f64,
        }
    }
}

impl std::fmt::Display for FrameSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameSize::Fixed(n) => write!(f, "{n}"),
            FrameSize::Imix => f.write_str("imix"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize, seq: u64, tsc: u64) -> Vec<u8> {
        let t = Template::new(len);
        let mut buf = vec![0u8; len];
        // SAFETY: buf holds len bytes and is owned here.
        unsafe { t.write_to(buf.as_mut_ptr(), seq, tsc) };
        buf
    }

    fn verify(f: &[u8]) -> Check {
        let size = if f.len() >= MIN_FRAME && f.len() <= MAX_FRAME {
            FrameSize::Fixed(f.len() as u16)
        } else {
            FrameSize::Fixed(64)
        };
        Templates::new(size).verify(f)
    }

    #[test]
    fn every_size_round_trips() {
        for len in [64usize, 65, 127, 128, 570, 1024, 1517, 1518] {
            let f = frame(len, 0xDEAD_BEEF_0000_0001 + len as u64, u64::MAX - 7);
            assert_eq!(
                checksum(&f),
                u64::from_le_bytes(f[CSUM_OFFSET..CSUM_OFFSET + 8].try_into().unwrap()),
                "the defined checksum"
            );
            assert_eq!(verify(&f), Check::Good { seq: 0xDEAD_BEEF_0000_0001 + len as u64, tsc: u64::MAX - 7 }, "{len}");
            assert_eq!(&f[12..14], &[0x88, 0xB5]);
        }
    }

    #[test]
    fn o1_checksum_equals_the_full_recomputation() {
        let t = Template::new(570);
        for (seq, tsc) in [(0u64, 0u64), (1, 2), (u64::MAX, u64::MAX), (12345, 987654321)] {
            let mut b = t.bytes.clone();
            b[SEQ_OFFSET..SEQ_OFFSET + 8].copy_from_slice(&seq.to_le_bytes());
            b[TSC_OFFSET..TSC_OFFSET + 8].copy_from_slice(&tsc.to_le_bytes());
            assert_eq!(checksum(&b), t.checksum_for(seq, tsc));
        }
    }

    #[test]
    fn any_flipped_byte_or_swapped_word_is_caught() {
        let good = frame(128, 42, 4242);
        for i in 0..good.len() {
            let mut f = good.clone();
            f[i] ^= 0x10;
            assert!(matches!(verify(&f), Check::Corrupt(_)), "flip at byte {i} passed");
        }
        // The checksum alone catches a change confined to one word and a swap of words.
        for w in 0..good.len() / 8 {
            for bit in [0, 7, 31, 63] {
                let mut f = good.clone();
                let x = u64::from_le_bytes(f[w * 8..w * 8 + 8].try_into().unwrap()) ^ (1u64 << bit);
                f[w * 8..w * 8 + 8].copy_from_slice(&x.to_le_bytes());
                if w != CSUM_OFFSET / 8 {
                    assert_ne!(checksum(&f), checksum(&good), "word {w} bit {bit}");
                }
            }
        }
        let mut f = good.clone();
        let (a, b) = (f[16..24].to_vec(), f[24..32].to_vec());
        f[16..24].copy_from_slice(&b);
        f[24..32].copy_from_slice(&a);
        assert_eq!(verify(&f), Check::Corrupt(Corruption::Checksum), "sequence and stamp swapped");
        let t = Templates::new(FrameSize::Fixed(128));
        assert_eq!(t.verify(&good[..100]), Check::Corrupt(Corruption::Length), "a truncated frame");
        assert_eq!(t.verify(&[0u8; 10]), Check::Corrupt(Corruption::Length));
    }

    #[test]
    fn sizes_parse_and_imix_is_7_4_1() {
        assert_eq!(FrameSize::parse("64"), Ok(FrameSize::Fixed(64)));
        assert_eq!(FrameSize::parse("IMIX"), Ok(FrameSize::Imix));
        for bad in ["63", "1519", "0", "big", ""] {
            assert!(FrameSize::parse(bad).is_err(), "{bad}");
        }
        let m = FrameSize::Imix.mean_len();
        assert!((m - (7.0 * 64.0 + 4.0 * 570.0 + 1518.0) / 12.0).abs() < 1e-9);
        let n1518 = (0..1200).filter(|&s| FrameSize::Imix.len_of(s) == 1518).count();
        assert_eq!(n1518, 100);
        for s in STANDARD_SIZES {
            assert!(FrameSize::parse(s).is_ok());
        }
    }
}
