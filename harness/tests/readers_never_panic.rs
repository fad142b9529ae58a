//! Property tests: the readers of user input (sweep config, .hlog files, parameter points,
//! summary.csv) return errors on any input, never panic.

use std::time::{Duration, SystemTime};

use ivbench::config::SweepConfig;
use ivbench::stats::new_histogram;
use ivbench::store::hlog::{read_log, tag_for, write_log, Interval};
use ivbench::store::summary::read_csv;
use probe_api::Point;
use proptest::prelude::*;

fn valid_log() -> Vec<u8> {
    let mut h = new_histogram();
    for v in 1..5000u64 {
        h.record(v * 13).unwrap();
    }
    write_log(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        "host.test",
        &[Interval { tag: tag_for("size=64"), start: Duration::from_secs(1), duration: Duration::from_secs(1), histogram: h }],
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn config_parser_never_panics(text in "\\PC{0,400}") {
        let _ = SweepConfig::parse(&text, "fuzz.toml");
    }

    #[test]
    fn config_parser_never_panics_on_near_valid_toml(
        iters in any::<i64>(), name in "[a-z.*]{0,20}", methods in prop::collection::vec("[a-z-]{0,8}", 0..3),
        params in prop::collection::vec("[a-z=,0-9 ]{0,12}", 0..3), batch in any::<i64>(),
    ) {
        let text = format!(
            "[defaults]\niterations = {iters}\nbatch = {batch}\n[[probe]]\nname = {name:?}\nmethods = {methods:?}\nparams = {params:?}\n"
        );
        if let Ok(cfg) = SweepConfig::parse(&text, "fuzz.toml") {
            let probes = ivbench::registry::all();
            let _ = cfg.jobs(&probes, true, "fuzz.toml");
        }
    }

    #[test]
    fn hlog_reader_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = read_log(&bytes);
    }

    #[test]
    fn hlog_reader_never_panics_on_corrupted_logs(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut log = valid_log();
        for (i, b) in flips {
            let at = i.index(log.len());
            log[at] = b;
        }
        let _ = read_log(&log);
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
        let _ = read_csv(&p);
    }
}

#[test]
fn the_valid_log_reads_back() {
    let back = read_log(&valid_log()).unwrap();
    assert_eq!(back["size=64"].len(), 4999);
}
