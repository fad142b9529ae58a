//! Property tests: the readers of user input (sweep config, .hlog files, parameter points,
//! summary.csv, manifest.json) return errors on any input, never panic, and never
//! allocate more than their input justifies (a counting allocator watches every test
//! thread's peak).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::time::{Duration, SystemTime};

use ivbench::config::SweepConfig;
use ivbench::stats::new_histogram;
use ivbench::store::hlog::{read_log, tag_for, write_log, Interval};
use ivbench::store::run_dir::read_manifest;
use ivbench::store::summary::read_csv;
use probe_api::Point;
use proptest::prelude::*;

/// Counts the bytes each thread has allocated, and the peak since the last reset.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn account(delta: isize) {
    let _ = LIVE.try_with(|l| {
        let now = l.get() + delta;
        l.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the bookkeeping
// touches only const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        account(layout.size() as isize);
        // SAFETY: the caller's layout contract is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        account(-(layout.size() as isize));
        // SAFETY: `ptr` came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak bytes allocated on this thread while `f` ran, above what was live before.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = LIVE.with(|l| l.get());
    PEAK.with(|p| p.set(start));
    let out = f();
    (out, (PEAK.with(|p| p.get()) - start).max(0) as usize)
}

/// What reading a few kilobytes of hostile input may cost.
const BOUND: usize = 64 << 20;

fn valid_log() -> Vec<u8> {
    let mut h = new_histogram();
    for v in 1..5000u64 {
        h.record(v * 13).unwrap();
    }
    write_log(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        "host.test",
        &[Interval {
            tag: tag_for("size=64"),
            start: Duration::from_secs(1),
            duration: Duration::from_secs(1),
            histogram: h,
        }],
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn config_parser_never_panics(text in "\\PC{0,400}") {
        let (_, peak) = peak_during(|| SweepConfig::parse(&text, "fuzz.toml"));
        prop_assert!(peak < BOUND, "{peak} bytes");
    }

    #[test]
    fn config_parser_never_panics_on_near_valid_toml(
        iters in any::<i64>(), name in "[a-z.*]{0,20}", methods in prop::collection::vec("[a-z-]{0,8}", 0..3),
        params in prop::collection::vec("[a-z=,0-9 ]{0,12}", 0..3), batch in any::<i64>(),
    ) {
        let text = format!(
            "[defaults]\niterations = {iters}\nbatch = {batch}\n[[probe]]\nname = {name:?}\nmethods = {methods:?}\nparams = {params:?}\n"
        );
        let probes = ivbench::registry::all();
        let (_, peak) = peak_during(|| SweepConfig::parse(&text, "fuzz.toml").map(|cfg| cfg.jobs(&probes, true, "fuzz.toml").map(|j| j.len())));
        // Jobs hold no sample buffers: however many iterations a config asks for, expanding
        // it costs kilobytes.
        prop_assert!(peak < BOUND, "{peak} bytes");
    }

    #[test]
    fn hlog_reader_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let (_, peak) = peak_during(|| read_log(&bytes));
        prop_assert!(peak < BOUND, "{peak} bytes");
    }

    #[test]
    fn hlog_reader_never_panics_on_corrupted_logs(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut log = valid_log();
        for (i, b) in flips {
            let at = i.index(log.len());
            log[at] = b;
        }
        let (_, peak) = peak_during(|| read_log(&log));
        prop_assert!(peak < BOUND, "{peak} bytes");
    }

    #[test]
    fn hlog_reader_bounds_memory_on_crafted_headers(
        payload_len in any::<u32>(), sigfig in 0u32..8, low in any::<u64>(), high in any::<u64>(), compressed in any::<bool>(),
    ) {
        let line = crafted_line(payload_len, sigfig, low, high, 64, compressed);
        let (_, peak) = peak_during(|| read_log(line.as_bytes()));
        prop_assert!(peak < BOUND, "{peak} bytes for a {}-byte line", line.len());
    }

    #[test]
    fn manifest_reader_never_panics(text in "\\PC{0,400}", version in any::<u32>()) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("manifest.json");
        std::fs::write(&p, &text).unwrap();
        let (_, peak) = peak_during(|| read_manifest(&p));
        prop_assert!(peak < BOUND);
        // A well-formed manifest with any schema version: read, or refused by version.
        let m = format!(r#"{{"schema_version":{version},"run_id":"r","ivbench_version":"0","started_utc":"t","finished_utc":null,
            "status":"complete","stop_reason":null,"command_line":[],"kind":"run","config":"","hist_units_per_cycle":100,
            "fingerprint":{{}},"probes":[]}}"#);
        std::fs::write(&p, m).unwrap();
        let r = read_manifest(&p);
        prop_assert_eq!(r.is_ok(), version == 1, "{:?}", r.err());
    }

    #[test]
    fn hlog_reader_never_panics_on_truncated_logs(cut in any::<prop::sample::Index>()) {
        let log = valid_log();
        let _ = read_log(&log[..cut.index(log.len())]);
    }

    #[test]
    fn point_parse_round_trips_or_errors(text in "[a-z0-9=, ]{0,30}") {
        if let Ok(p) = Point::parse(&text) {
            prop_assert_eq!(Point::parse(&p.to_string()).unwrap(), p);
        }
    }

    #[test]
    fn summary_reader_never_panics(text in "\\PC{0,300}") {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("summary.csv");
        std::fs::write(&p, text).unwrap();
        let (_, peak) = peak_during(|| read_csv(&p));
        prop_assert!(peak < BOUND);
    }
}

/// An interval-log line whose histogram header says what the arguments say, followed by
/// `zeros` zero bytes of counts, optionally zlib-compressed as the V2 format allows.
fn crafted_line(payload_len: u32, sigfig: u32, low: u64, high: u64, zeros: usize, compressed: bool) -> String {
    let mut plain = Vec::new();
    plain.extend_from_slice(&0x1c84_9313u32.to_be_bytes());
    plain.extend_from_slice(&payload_len.to_be_bytes());
    plain.extend_from_slice(&0u32.to_be_bytes());
    plain.extend_from_slice(&sigfig.to_be_bytes());
    plain.extend_from_slice(&low.to_be_bytes());
    plain.extend_from_slice(&high.to_be_bytes());
    plain.extend_from_slice(&1.0f64.to_be_bytes());
    plain.resize(plain.len() + zeros, 0);
    let encoded = if compressed {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&plain).unwrap();
        let body = z.finish().unwrap();
        let mut e = 0x1c84_9314u32.to_be_bytes().to_vec();
        e.extend_from_slice(&(body.len() as u32).to_be_bytes());
        e.extend_from_slice(&body);
        e
    } else {
        plain
    };
    use base64::Engine;
    format!("Tag=x,0.100,0.200,3.000,{}\n", base64::engine::general_purpose::STANDARD.encode(encoded))
}

#[test]
fn a_compressed_bomb_is_refused_without_inflating_it() {
    // 64 MiB of zero counts compress to ~64 KiB; the reader stops at its inflate limit.
    let line = crafted_line(64 << 20, 3, 1, 1 << 40, 64 << 20, true);
    assert!(line.len() < 1 << 20, "{}", line.len());
    let (r, peak) = peak_during(|| read_log(line.as_bytes()));
    let e = r.unwrap_err().to_string();
    assert!(e.contains("line 1") && e.contains("inflates to more than"), "{e}");
    assert!(peak < BOUND, "{peak} bytes");
}

#[test]
fn declared_sizes_the_payload_does_not_carry_are_refused() {
    for (line, why) in [
        (crafted_line(u32::MAX, 3, 1, 1 << 40, 16, false), "declares"),
        (crafted_line(16, 5, 1, u64::MAX / 2, 16, false), "significant digits"),
    ] {
        let (r, peak) = peak_during(|| read_log(line.as_bytes()));
        let e = r.unwrap_err().to_string();
        assert!(e.contains(why), "{e}");
        assert!(peak < 1 << 20, "{peak} bytes");
    }
}

#[test]
fn the_valid_log_reads_back() {
    let back = read_log(&valid_log()).unwrap();
    assert_eq!(back["size=64"].len(), 4999);
}
