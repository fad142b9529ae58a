//! `host.memcpy`: copying one packet-sized buffer, cache-warm — the per-packet cost a
//! device model or vhost backend pays when it cannot avoid the copy.

use std::hint::black_box;

use probe_api::{Budget, Methods, Metric, Point, Probe, ProbeError, Samples, Support};

use crate::pinning::PinnedHere;
use crate::sampling;

pub struct Memcpy;

const NAME: &str = "host.memcpy";
/// Default sweep: cache-line multiples up to a full Ethernet frame (1518 bytes).
pub const SIZES: [usize; 6] = [64, 128, 256, 512, 1024, 1518];
const MAX_SIZE: usize = 64 * 1024;
/// Slots in the source and destination rings: consecutive copies touch different
/// buffers (as consecutive packets would), yet at 1518 bytes both rings together stay
/// around 24 KiB, inside L1d, so the figure is the copy and not a miss.
const RING: usize = 8;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct CacheLine([u8; 64]);

/// `RING` buffers of `size` bytes, each starting on its own cache line.
struct Ring {
    lines: Vec<CacheLine>,
    stride: usize,
}

impl Ring {
    fn new(size: usize, fill: u8) -> Self {
        let stride = size.div_ceil(64) * 64;
        let mut lines = vec![CacheLine([0; 64]); RING * stride / 64];
        for (i, line) in lines.iter_mut().enumerate() {
            line.0 = [fill.wrapping_add(i as u8); 64];
        }
        Ring { lines, stride }
    }
    fn slot(&mut self, i: usize) -> *mut u8 {
        // SAFETY: in bounds: i < RING and the vector holds RING * stride bytes.
        unsafe { self.lines.as_mut_ptr().cast::<u8>().add(i * self.stride) }
    }
}

fn size_of_point(point: &Point) -> Result<usize, ProbeError> {
    let size = point
        .get_u64("size")
        .ok_or_else(|| ProbeError::Failed(format!("{NAME} needs a parameter size=<bytes>, got `{point}`")))?;
    match usize::try_from(size) {
        Ok(s) if (1..=MAX_SIZE).contains(&s) => Ok(s),
        _ => Err(ProbeError::Failed(format!("{NAME}: size {size} outside 1..={MAX_SIZE}"))),
    }
}

impl Probe for Memcpy {
    fn name(&self) -> &'static str {
        NAME
    }
    fn description(&self) -> &'static str {
        "cache-warm copy of one packet-sized buffer (ring of sources -> ring of destinations)"
    }
    fn group(&self) -> &'static str {
        "memcpy"
    }
    fn support(&self) -> Support {
        Support::Supported
    }
    fn points(&self) -> Vec<Point> {
        SIZES.iter().map(|&n| Point::none().with("size", n)).collect()
    }
    fn methods(&self) -> Methods {
        Methods::Both
    }
    fn run(&self, point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
        let size = size_of_point(point)?;
        let _pin = PinnedHere::measuring_thread(budget)?;
        let mut src = Ring::new(size, 0x5a);
        let mut dst = Ring::new(size, 0);
        let mut slot = 0usize;
        let recorded = sampling::record(budget, Methods::Both, NAME, || {
            slot = (slot + 1) % RING;
            let (s, d) = (src.slot(slot), dst.slot(slot));
            // black_box on the pointers and the length: the copy has a run-time length
            // (as a packet's would) and its result is treated as observed, so the
            // compiler can neither specialise nor drop it.
            // SAFETY: s and d point at `size` valid bytes of two distinct buffers.
            unsafe { std::ptr::copy_nonoverlapping(black_box(s), black_box(d), black_box(size)) };
            black_box(d);
            Ok(())
        })?;
        if dst.lines.iter().flat_map(|l| l.0).take(size).zip(src.lines.iter().flat_map(|l| l.0)).any(|(a, b)| a != b) {
            return Err(ProbeError::Failed(format!("{NAME}: destination does not match source after the copy")));
        }

        let net = recorded.net_median_per_op();
        let basis = match recorded.method {
            probe_api::Method::PerOp => "per-op median minus timer overhead",
            probe_api::Method::Batched { .. } => "(median batch total minus timer overhead) / batch",
        };
        let mut s = recorded.into_samples(sampling::HOST_CLOCK);
        s.notes.push(format!(
            "{size} bytes via ptr::copy_nonoverlapping (libc memcpy, run-time length); ring of {RING} source and {RING} destination buffers, cache-warm; per-op: lfence waits for the loads, the stores may still drain from the store buffer after the second timestamp"
        ));
        match net {
            Some(cycles) => {
                s.metrics.push(Metric::new("bytes_per_cycle", size as f64 / cycles, "bytes/cycle"));
                s.metrics.push(Metric::new("bytes_per_cycle.basis_cycles", cycles, "cycles"));
                s.notes.push(format!("bytes_per_cycle = size / {basis} ({cycles:.2} cycles)"));
            }
            None => s.notes.push(format!(
                "bytes_per_cycle omitted: {basis} is not above zero (copy hidden inside the timer's own cost)"
            )),
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_slots_are_line_aligned_and_disjoint() {
        for size in SIZES {
            let mut r = Ring::new(size, 1);
            let base = r.slot(0) as usize;
            for i in 0..RING {
                let p = r.slot(i) as usize;
                assert_eq!(p % 64, 0, "slot {i} of {size}");
                assert!(p - base >= i * size, "slot {i} overlaps slot {}", i.saturating_sub(1));
                assert!(p - base + size <= r.lines.len() * 64, "slot {i} runs past the ring");
            }
        }
    }

    #[test]
    fn size_parameter_is_validated() {
        assert_eq!(size_of_point(&Point::none().with("size", 1518)).unwrap(), 1518);
        assert!(size_of_point(&Point::none().with("size", MAX_SIZE + 1)).is_err());
        assert!(size_of_point(&Point::none().with("size", "big")).is_err());
    }
}
