//! Both ends in their own threads over one region: the accounting identity holds and no
//! frame is lost, duplicated, reordered or corrupted, whatever the interleaving.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use packet_ring::{
    counters, imbalance, Consumer, CopyMode, FrameSize, Generator, Layout, Producer, Rate, Region, RingView, Sink,
};

fn trial(size: FrameSize, mode: CopyMode, batch: u32, slots: u32, packets: u64) -> probe_api::Throughput {
    let l = Layout::new(slots).unwrap();
    let region = Region::anonymous(l.region_size).unwrap();
    // SAFETY: the region is fresh, page aligned, as large as the layout, and outlives both
    // threads (they are joined below).
    let view = unsafe { RingView::init(region.base(), region.len(), l) }.unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let gen = std::thread::spawn(move || {
        let mut g = Generator::new(Producer::new(view), size, Rate::Max, batch, 1e9, 0);
        let mut t = 0;
        while g.stats.sent < packets {
            t += 1;
            g.step(t, packets);
        }
        g.finish();
        d.store(true, Ordering::Release);
        g.stats
    });
    let sink = std::thread::spawn(move || {
        let mut s = Sink::new(Consumer::new(view), size, mode, batch, 64, 10_000);
        loop {
            let finished = done.load(Ordering::Acquire);
            let n = s.poll(|| u64::MAX).unwrap();
            if finished && n == 0 {
                break s;
            }
        }
    });
    let g = gen.join().unwrap();
    let s = sink.join().unwrap();
    counters(&g, &s)
}

#[test]
fn two_threads_balance_exactly_in_every_mode() {
    for (size, mode, batch, slots) in [
        (FrameSize::Fixed(64), CopyMode::Copy, 1, 8),
        (FrameSize::Fixed(64), CopyMode::ZeroCopy, 32, 256),
        (FrameSize::Fixed(1518), CopyMode::Copy, 32, 64),
        (FrameSize::Imix, CopyMode::ZeroCopy, 8, 16),
    ] {
        let a = trial(size, mode, batch, slots, 200_000);
        assert_eq!(imbalance(&a), None, "{size} {mode:?} batch {batch}: {a:?}");
        assert_eq!(a.sent, 200_000);
        assert_eq!(
            (a.lost, a.duplicated, a.reordered, a.corrupted),
            (0, 0, 0, 0),
            "{size} {mode:?} batch {batch}: {a:?}"
        );
    }
}
