//! Terminal tables of summary rows, shared by `run`, `sweep` and `show`.

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};

use crate::store::SummaryRow;

fn num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) if x >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
    }
}

pub fn summary_table(rows: &[SummaryRow]) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "probe",
        "params",
        "method",
        "status",
        "count",
        "p50 ns",
        "p99 ns",
        "p99.9 ns",
        "p50 cyc",
        "p99 cyc",
        "overhead cyc",
        "Mpps",
        "loss",
    ]);
    for r in rows {
        let status = r.status.to_string();
        let mut status = if status.len() > 60 {
            format!("{}...", &status[..status.char_indices().nth(57).map(|(i, _)| i).unwrap_or(status.len())])
        } else {
            status
        };
        if !r.partial.is_empty() {
            status.push_str(" (partial)");
        }
        if !r.contention.is_empty() {
            status.push_str(" (contended)");
        }
        t.add_row(vec![
            Cell::new(&r.probe),
            Cell::new(if r.variant.is_empty() { r.params.clone() } else { format!("{} <{}>", r.params, r.variant) }),
            Cell::new(&r.method),
            Cell::new(status),
            Cell::new(r.count).set_alignment(CellAlignment::Right),
            Cell::new(num(r.p50_ns)).set_alignment(CellAlignment::Right),
            Cell::new(num(r.p99_ns)).set_alignment(CellAlignment::Right),
            Cell::new(num(r.p999_ns)).set_alignment(CellAlignment::Right),
            Cell::new(num(r.p50_cycles)).set_alignment(CellAlignment::Right),
            Cell::new(num(r.p99_cycles)).set_alignment(CellAlignment::Right),
            Cell::new(r.overhead_cycles).set_alignment(CellAlignment::Right),
            Cell::new(num(r.mpps)).set_alignment(CellAlignment::Right),
            Cell::new(r.metric("loss_ratio").map(|l| format!("{:.3}%", l * 100.0)).unwrap_or_else(|| "-".into()))
                .set_alignment(CellAlignment::Right),
        ]);
    }
    t.to_string()
}
