//! The report's throughput section: every row with an Mpps figure (path.*) as a bar against
//! the line rates at its frame size and the 2014 talk's VM-to-VM figure, and a table of
//! the counters behind each bar.

use std::fmt::Write;

use probe_api::throughput::{line_rate_mpps, LINE_RATES_GBPS};

use super::html::esc;
use super::plots::{self, RateBar};
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
        Ok(svg) => o.push_str(&svg.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)),
        Err(e) => {
            let _ = writeln!(o, "<p class=\"small\">chart not drawn: {}</p>", esc(&e));
        }
    }
    o.push_str("<div class=\"wrap\"><table>\n<tr><th>probe</th><th>params</th><th>Mpps</th><th>x 2014 (0.71)</th><th>Gbit/s</th><th>Gbit/s with preamble+gap</th><th>% 10GbE</th><th>% 40GbE</th><th>% 100GbE</th><th>sent</th><th>received</th><th>dropped</th><th>loss ratio</th><th>lost / dup / reord / corrupt</th><th>cycles/pkt tx / rx</th><th>empty polls</th><th>one-way p50 / p99 ns</th></tr>\n");
    for r in &rows {
        let m = |n: &str| r.metric(n);
        let counts = ["lost", "duplicated", "reordered", "corrupted"]
            .iter()
            .map(|n| cell(m(n), 0))
            .collect::<Vec<_>>()
            .join(" / ");
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{} / {}</td><td class=\"n\">{}</td><td class=\"n\">{} / {}</td></tr>",
            esc(&r.probe),
            esc(&if r.variant.is_empty() { r.params.clone() } else { format!("{} <{}>", r.params, r.variant) }),
            cell(r.mpps, 3),
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
    o.push_str("</table></div>\n<div class=\"caption\"><b>Mpps</b>: received packets / trial time &middot; <b>loss ratio</b>: (dropped + corrupted) / sent &middot; <b>cycles/pkt</b>: TSC cycles each side spent busy per packet &middot; <b>one-way latency</b>: receive TSC minus the send stamp in the frame, sampled frames</div>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Status;

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
