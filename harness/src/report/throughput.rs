//! The report's throughput section: every row with an Mpps figure (path.*) as a bar against
//! the line rates at its frame size and the 2014 talk's VM-to-VM figure, a table of the
//! counters behind each bar, and the one-way latency CDFs of the rows that sampled latency.

use std::fmt::Write;

use probe_api::throughput::{line_rate_mpps, LINE_RATES_GBPS};

use super::html::{esc, inline_svg};
use super::plots::{self, CdfLine, RateBar};
use crate::store::{LoadedRun, SummaryRow};

/// virtio-net + vhost-net, VM to VM, 64 B (the 2014 talk).
pub const SEED_VM_TO_VM_MPPS: f64 = 0.71;

const LINE_NAMES: [&str; 4] = ["10GbE", "25GbE", "40GbE", "100GbE"];

/// The mean frame length of a row: its `frame_bytes` metric, else its `size` parameter.
fn frame_bytes(r: &SummaryRow) -> Option<f64> {
    r.metric("frame_bytes").or_else(|| r.params.split(',').find_map(|kv| kv.strip_prefix("size=")?.parse().ok()))
}

fn label(r: &SummaryRow) -> String {
    let mut l = format!("{} {}", r.probe, r.params);
    if !r.variant.is_empty() {
        l.push_str(&format!(" <{}>", r.variant));
    }
    l
}

/// The parameters a `path.host-ring` row shares with another path's row: what makes the
/// two the same ring workload (a VM path's `notify` and the like are left out).
const RING_KEYS: [&str; 4] = ["size", "copy", "rate", "batch"];

fn param<'a>(r: &'a SummaryRow, key: &str) -> Option<&'a str> {
    r.params.split(',').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// A row's Mpps over that of the `path.host-ring` row of the same ring workload in the
/// same run (the ceiling without virtualization), when there is one.
pub fn host_ring_ratio(rows: &[&SummaryRow], r: &SummaryRow) -> Option<f64> {
    if r.probe == "path.host-ring" || param(r, "size").is_none() {
        return None;
    }
    let ring = rows.iter().find(|h| {
        h.probe == "path.host-ring" && h.variant.is_empty() && RING_KEYS.iter().all(|k| param(h, k) == param(r, k))
    })?;
    Some(r.mpps? / ring.mpps.filter(|m| *m > 0.0)?)
}

fn cell(v: Option<f64>, digits: usize) -> String {
    v.filter(|x| x.is_finite()).map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "-".into())
}

pub fn section(run: &LoadedRun) -> String {
    let rows: Vec<&SummaryRow> = run.rows.iter().filter(|r| r.status.is_ok() && r.is_throughput()).collect();
    let mut o = format!(
        "<p>Packets per second each path delivered, open loop (a packet that finds the path full is dropped and counted), beside the line rate of 10/25/40/100GbE at that row's frame size (20 B preamble and gap per frame) and the 2014 talk's virtio-net + vhost-net VM-to-VM figure, <b>{SEED_VM_TO_VM_MPPS} Mpps</b> at 64 B (dashed).</p>\n"
    );
    if rows.is_empty() {
        let not_ok: Vec<String> = run
            .rows
            .iter()
            .filter(|r| r.probe.starts_with("path.") && !r.status.is_ok())
            .map(|r| format!("{} {} ({})", r.probe, r.params, r.status))
            .collect();
        let _ = writeln!(
            o,
            "<p class=\"small\">No throughput row is ok in this run.{}</p>",
            if not_ok.is_empty() { String::new() } else { format!(" Not ok: {}", esc(&not_ok.join("; "))) }
        );
        return o;
    }
    let bars: Vec<RateBar> = rows
        .iter()
        .filter_map(|r| {
            let b = frame_bytes(r)?;
            Some(RateBar {
                label: label(r),
                mpps: r.mpps?,
                line_rates: LINE_RATES_GBPS.iter().zip(LINE_NAMES).map(|(g, n)| (line_rate_mpps(*g, b), n)).collect(),
            })
        })
        .collect();
    match plots::rate_svg(&bars, (SEED_VM_TO_VM_MPPS, "2014 VM to VM: 0.71 Mpps"), 1200) {
        Ok(svg) => o.push_str(&inline_svg(&svg)),
        Err(e) => {
            let _ = writeln!(o, "<p class=\"small\">chart not drawn: {}</p>", esc(&e));
        }
    }
    o.push_str("<div class=\"wrap\"><table>\n<tr><th>probe</th><th>params</th><th>Mpps</th><th>x host-ring</th><th>x 2014 (0.71)</th><th>Gbit/s</th><th>Gbit/s with preamble+gap</th><th>% 10GbE</th><th>% 40GbE</th><th>% 100GbE</th><th>sent</th><th>received</th><th>dropped</th><th>loss ratio</th><th>lost / dup / reord / corrupt</th><th>cycles/pkt tx / rx</th><th>empty polls</th><th>one-way p50 / p99 ns</th></tr>\n");
    for r in &rows {
        let m = |n: &str| r.metric(n);
        let counts = ["lost", "duplicated", "reordered", "corrupted"]
            .iter()
            .map(|n| cell(m(n), 0))
            .collect::<Vec<_>>()
            .join(" / ");
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{} / {}</td><td class=\"n\">{}</td><td class=\"n\">{} / {}</td></tr>",
            esc(&r.probe),
            esc(&if r.variant.is_empty() { r.params.clone() } else { format!("{} <{}>", r.params, r.variant) }),
            cell(r.mpps, 3),
            cell(host_ring_ratio(&rows, r), 2),
            cell(r.mpps.map(|x| x / SEED_VM_TO_VM_MPPS), 1),
            cell(r.gbit_s, 2),
            cell(m("gbit_s_wire"), 2),
            cell(m("line_10g_pct"), 1),
            cell(m("line_40g_pct"), 1),
            cell(m("line_100g_pct"), 1),
            r.sent.map(|v| v.to_string()).unwrap_or_default(),
            r.received.map(|v| v.to_string()).unwrap_or_default(),
            r.dropped.map(|v| v.to_string()).unwrap_or_default(),
            cell(m("loss_ratio"), 5),
            counts,
            cell(m("tx_cycles_per_packet"), 1),
            cell(m("rx_cycles_per_packet"), 1),
            cell(m("empty_poll_share"), 3),
            cell(r.p50_ns, 0),
            cell(r.p99_ns, 0),
        );
    }
    o.push_str("</table></div>\n<div class=\"caption\"><b>Mpps</b>: received packets / trial time &middot; <b>x host-ring</b>: over <code>path.host-ring</code> with the same size, copy, rate and batch in this run (the same ring in two host threads) &middot; <b>loss ratio</b>: (dropped + corrupted) / sent &middot; <b>cycles/pkt</b>: TSC cycles each side spent busy per packet &middot; <b>one-way latency</b>: receive TSC minus the send stamp in the frame, sampled frames</div>\n");
    o.push_str(&latency_cdf(run, &rows));
    o
}

/// The one-way latency CDFs of the rows that sampled latency, overlaid in one chart with
/// its caption; nothing at all when no row did (throughput-only paths).
fn latency_cdf(run: &LoadedRun, rows: &[&SummaryRow]) -> String {
    let mut lines = Vec::new();
    let mut drawn: Vec<&SummaryRow> = Vec::new();
    let mut not_drawn = Vec::new();
    for r in rows {
        let Some(h) = run.histogram(r).filter(|h| !h.is_empty()) else { continue };
        let points = if r.tsc_khz > 0 { plots::cdf_points(h, r.tsc_khz) } else { Vec::new() };
        if points.is_empty() {
            not_drawn.push(format!(
                "{} ({})",
                label(r),
                if r.tsc_khz == 0 { "no TSC rate" } else { "every sample 0 ns" }
            ));
            continue;
        }
        lines.push(CdfLine { label: label(r), points });
        drawn.push(r);
    }
    let mut o = String::new();
    if !lines.is_empty() {
        o.push_str("<p>One-way latency of the sampled frames of each row above that has latency samples, as a cumulative distribution: a line reaching 99% at x means 99% of that row's sampled frames crossed the path in x or less.</p>\n");
        match plots::cdf_overlay_svg(&lines, 1200) {
            Ok(svg) => o.push_str(&inline_svg(&svg)),
            Err(e) => {
                let _ = writeln!(o, "<p class=\"small\">chart not drawn: {}</p>", esc(&e));
            }
        }
        let _ = writeln!(o, "<div class=\"caption\">{}</div>", cdf_caption(&drawn));
    }
    if !not_drawn.is_empty() {
        let _ = writeln!(o, "<p class=\"small\">Latency CDF not drawn for: {}</p>", esc(&not_drawn.join("; ")));
    }
    o
}

/// Unit, clock and timer overhead of the CDF chart, from the rows it draws.
fn cdf_caption(rows: &[&SummaryRow]) -> String {
    fn distinct<T: PartialEq>(v: impl Iterator<Item = T>) -> Vec<T> {
        let mut out = Vec::new();
        for x in v {
            if !out.contains(&x) {
                out.push(x);
            }
        }
        out
    }
    let rates = distinct(rows.iter().map(|r| r.tsc_khz));
    let rate = match rates.as_slice() {
        [one] => format!("at {one} kHz"),
        _ => "at each row's own TSC rate".into(),
    };
    let clocks = distinct(rows.iter().map(|r| if r.clock.is_empty() { "not recorded" } else { r.clock.as_str() }));
    let subtracted: Vec<String> = rows
        .iter()
        .filter(|r| r.overhead_cycles > 0)
        .map(|r| format!("{} ({} cycles)", label(r), r.overhead_cycles))
        .collect();
    let overhead = if subtracted.is_empty() {
        "not subtracted: every sample includes the cost of one rdtsc on each side (the send stamp and the receive stamp)".to_string()
    } else {
        format!(
            "not subtracted (each sample includes one rdtsc on each side), except on {}, whose recorded overhead is subtracted",
            subtracted.join(", ")
        )
    };
    format!(
        "<b>unit</b>: ns, converted from TSC cycles {} (log scale) &middot; <b>clock</b>: {} &middot; <b>timer overhead</b>: {} &middot; <b>sample</b>: receive TSC minus the send stamp in the frame, for every k-th frame (<code>latency_stride</code> in the row's metrics, where given); samples of 0 ns (a receive stamp below its send stamp) count in the shares but cannot be drawn on the log axis",
        esc(&rate),
        esc(&clocks.join("; ")),
        esc(&overhead),
    )
}

#[cfg(test)]
mod tests {
    use hdrhistogram::Histogram;

    use super::*;
    use crate::stats::{new_histogram, CycleStats, HIST_UNITS_PER_CYCLE};
    use crate::store::run_dir::{load_run, utc_now};
    use crate::store::{RunDir, Status};

    const KHZ: u64 = 2_000_000;

    /// A path row at `mpps`; with `latency_cycles`, its one-way samples as a histogram.
    fn path_row(probe: &str, mpps: f64, latency_cycles: Option<&[u64]>) -> (SummaryRow, Option<Histogram<u64>>) {
        let mut row = SummaryRow::without_samples(probe, "batch=32,copy=copy,size=64", Status::Ok, "per-op");
        let h = latency_cycles.map(|c| {
            let mut h = new_histogram();
            for v in c {
                h.record(v * HIST_UNITS_PER_CYCLE).unwrap();
            }
            h
        });
        if let Some(h) = &h {
            row = row.with_stats(&CycleStats::from_histogram(h), KHZ);
            row.clock = "host rdtsc: send stamp in the frame -> sink rdtsc, cross-CPU".into();
        }
        row.tsc_khz = KHZ;
        let received = (mpps * 1e6) as u64;
        (row.mpps, row.gbit_s, row.sent, row.received, row.dropped) =
            (Some(mpps), Some(mpps * 0.512), Some(received), Some(received), Some(0));
        row.metrics = "frame_bytes=64 B; loss_ratio=0 ratio".into();
        (row, h)
    }

    fn run_of(rows: Vec<(SummaryRow, Option<Histogram<u64>>)>) -> (tempfile::TempDir, LoadedRun) {
        let d = tempfile::tempdir().unwrap();
        let mut run = RunDir::create(d.path(), "run", "", serde_json::json!({})).unwrap();
        for (row, h) in rows {
            run.record(row, h, std::time::Instant::now(), utc_now()).unwrap();
        }
        run.finish(None).unwrap();
        let loaded = load_run(&run.path).unwrap();
        (d, loaded)
    }

    const CDF_TITLE: &str = "one-way latency: cumulative distribution of each path row";

    /// The CDF chart's SVG inside a rendered section, if there is one.
    fn cdf_svg_of(section: &str) -> Option<&str> {
        let title = section.find(CDF_TITLE)?;
        let start = section[..title].rfind("<svg")?;
        let end = title + section[title..].find("</svg>")?;
        Some(&section[start..end])
    }

    #[test]
    fn a_path_is_set_beside_the_host_ring_of_the_same_workload() {
        let with = |probe: &str, params: &str, mpps: f64| {
            let mut r = path_row(probe, mpps, None).0;
            r.params = params.into();
            r
        };
        let ring = with("path.host-ring", "batch=32,copy=copy,rate=max,size=64", 10.0);
        let ring_1518 = with("path.host-ring", "batch=32,copy=copy,rate=max,size=1518", 2.0);
        let a = with("path.a", "batch=32,copy=copy,notify=poll,rate=max,size=64", 8.0);
        let a_1518 = with("path.a", "batch=32,copy=copy,notify=halt,rate=max,size=1518", 1.0);
        let other_batch = with("path.a", "batch=1,copy=copy,notify=poll,rate=max,size=64", 3.0);
        let rows = vec![&ring, &ring_1518, &a, &a_1518, &other_batch];
        assert_eq!(host_ring_ratio(&rows, &a), Some(0.8));
        assert_eq!(host_ring_ratio(&rows, &a_1518), Some(0.5));
        assert_eq!(host_ring_ratio(&rows, &other_batch), None, "no host-ring row with batch=1");
        assert_eq!(host_ring_ratio(&rows, &ring), None, "not beside itself");
    }

    #[test]
    fn latency_cdfs_overlay_the_rows_with_latency_and_only_those() {
        let ring: Vec<u64> = (0..5000).map(|i| 300 + i % 700).collect();
        let veth: Vec<u64> = (0..5000).map(|i| 8_000 + (i * 37) % 40_000).collect();
        let (_d, run) = run_of(vec![
            path_row("path.host-ring", 20.0, Some(&ring)),
            path_row("path.dpdk-vhost", 9.0, None),
            path_row("path.veth", 1.2, Some(&veth)),
        ]);
        let s = section(&run);
        let svg = cdf_svg_of(&s).unwrap_or_else(|| panic!("no CDF chart in {s}"));
        // One legend label per row with latency, none for the throughput-only row.
        let labelled = |probe: &str| svg.contains(&format!(">\n{probe} batch=32,copy=copy,size=64\n</text>"));
        assert!(labelled("path.host-ring") && labelled("path.veth"), "{svg}");
        assert!(!labelled("path.dpdk-vhost"), "{svg}");
        // One polyline per series and one legend stroke per series: two rows, four strokes.
        let series =
            |rgb: &str| svg.matches(&format!("<polyline fill=\"none\" opacity=\"1\" stroke=\"{rgb}\"")).count();
        assert_eq!(series("#4678B4"), 2, "{svg}");
        assert_eq!(series("#F28E2B"), 2, "{svg}");
        assert_eq!(series("#E15759"), 0, "a third series: {svg}");
        // Caption: unit, clock, and the timer cost left in.
        let caption = &s[s.find(CDF_TITLE).unwrap()..];
        assert!(caption.contains("<b>unit</b>: ns, converted from TSC cycles at 2000000 kHz"), "{caption}");
        assert!(caption.contains("host rdtsc: send stamp in the frame -&gt; sink rdtsc, cross-CPU"), "{caption}");
        assert!(
            caption.contains("not subtracted: every sample includes the cost of one rdtsc on each side"),
            "{caption}"
        );
    }

    #[test]
    fn no_latency_no_cdf_chart() {
        // A latency row that is no path row (no Mpps) does not count either.
        let (syscall, h) = path_row("host.syscall.getppid", 1.0, Some(&[200, 210, 230]));
        let syscall = SummaryRow { mpps: None, gbit_s: None, sent: None, received: None, dropped: None, ..syscall };
        let (_d, run) =
            run_of(vec![path_row("path.dpdk-vhost", 9.0, None), (syscall, h), path_row("path.dpdk-memif", 11.0, None)]);
        assert!(run.histogram(&run.rows[1]).is_some());
        let s = section(&run);
        assert!(s.contains("<svg"), "the rate chart is still drawn: {s}");
        assert!(cdf_svg_of(&s).is_none() && !s.contains("cumulative"), "{s}");
        assert_eq!(s.matches("<svg").count(), 1, "{s}");
    }

    #[test]
    fn frame_length_comes_from_the_metric_or_the_size() {
        let mut r = SummaryRow::without_samples("path.x", "batch=1,size=1518", Status::Ok, "per-op");
        assert_eq!(frame_bytes(&r), Some(1518.0));
        r.metrics = "frame_bytes=353.5 B".into();
        assert_eq!(frame_bytes(&r), Some(353.5));
        r.params = "size=imix".into();
        r.metrics.clear();
        assert_eq!(frame_bytes(&r), None);
    }
}
