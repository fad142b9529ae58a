//! Plots as SVG strings (plotters' SVG backend), drawn only from stored histograms and rows.
//!
//! Latencies span from a fraction of a ns (batched loops) to milliseconds (a preempted
//! wake-up), often within one distribution, so every ns axis is logarithmic unless its
//! range is narrow, and ticks are chosen here (1-2-5 per decade) rather than by plotters,
//! whose log axis puts a label on every integer multiple.

use std::error::Error;

use hdrhistogram::Histogram;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::stats::{cycles_to_ns, HIST_UNITS_PER_CYCLE};

type DrawResult = Result<(), Box<dyn Error>>;

const FONT: &str = "sans-serif";
const BAR: RGBColor = RGBColor(70, 120, 180);
const P99: RGBColor = RGBColor(200, 80, 40);
const SEED: RGBColor = RGBColor(40, 150, 70);
const GRID: RGBColor = RGBColor(225, 225, 225);

/// `1.5 µs`, `250 ns`, `0.48 ns`: ticks carry their unit so a reader never counts zeros.
pub fn fmt_ns(ns: f64) -> String {
    let (v, unit) = if ns >= 1e9 {
        (ns / 1e9, "s")
    } else if ns >= 1e6 {
        (ns / 1e6, "ms")
    } else if ns >= 1e3 {
        (ns / 1e3, "µs")
    } else {
        (ns, "ns")
    };
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else if v >= 0.1 || v == 0.0 {
        2
    } else {
        4
    };
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    format!("{s} {unit}")
}

/// Tick positions for a log axis over [lo, hi]: 1-2-5 per decade when that gives at most
/// `max` ticks, else powers of ten (thinned); a narrow range gets linear "nice" ticks.
pub fn log_ticks(lo: f64, hi: f64, max: usize) -> Vec<f64> {
    if lo.is_nan() || hi.is_nan() || lo <= 0.0 || hi <= lo {
        return vec![lo];
    }
    let (d0, d1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let within = |v: &f64| *v >= lo * (1.0 - 1e-9) && *v <= hi * (1.0 + 1e-9);
    let sets: [&[f64]; 4] = [&[1.0, 2.0, 3.0, 5.0, 7.0], &[1.0, 2.0, 5.0], &[1.0, 3.0], &[1.0]];
    let candidates: Vec<Vec<f64>> = sets
        .iter()
        .map(|m| (d0..=d1).flat_map(|d| m.iter().map(move |x| x * 10f64.powi(d))).filter(within).collect())
        .collect();
    // Densest set that fits, preferring three or more labels; two will do before giving up.
    for min in [3, 2] {
        if let Some(t) = candidates.iter().find(|t| t.len() >= min && t.len() <= max) {
            return t.clone();
        }
    }
    let decades: Vec<f64> = (d0..=d1).map(|d| 10f64.powi(d)).filter(within).collect();
    if decades.len() > max {
        let step = decades.len().div_ceil(max);
        return decades.into_iter().step_by(step).collect();
    }
    linear_ticks(lo, hi, max.min(6))
}

/// "Nice" linear ticks (steps of 1, 2 or 5 x 10^k) inside [lo, hi].
pub fn linear_ticks(lo: f64, hi: f64, max: usize) -> Vec<f64> {
    if hi.is_nan() || lo.is_nan() || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / max.max(2) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let mut t = Vec::new();
    let mut v = (lo / step).ceil() * step;
    while v <= hi * (1.0 + 1e-12) {
        t.push(v);
        v += step;
    }
    t
}

/// A linear f64 axis with ticks chosen here. plotters' own f64 axis loses its default
/// label formatting once key points are bound to it, which the mesh needs.
#[derive(Clone)]
struct LinAxis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ranged for LinAxis {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;
    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = (v - self.lo) / (self.hi - self.lo);
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }
    fn key_points<Hint: plotters::coord::ranged1d::KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        self.ticks.clone()
    }
    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

fn units_to_ns(units: u64, tsc_khz: u64) -> f64 {
    cycles_to_ns(units as f64 / HIST_UNITS_PER_CYCLE as f64, tsc_khz)
}

/// One bar of the latency histogram, in ns.
#[derive(Clone, Debug, PartialEq)]
pub struct Bin {
    pub lo: f64,
    pub hi: f64,
    pub count: u64,
}

/// What `histogram_bins` did with samples a log axis cannot show.
#[derive(Clone, Debug, PartialEq)]
pub struct Binned {
    pub bins: Vec<Bin>,
    /// Samples at 0 (timer overhead at least as large as the sample), drawn in the first bin.
    pub zeros: u64,
}

/// Log-spaced bins between the smallest non-zero and the largest recorded value, filled by
/// walking the HdrHistogram's recorded buckets, so that a tail three decades long gets as
/// much room as the body.
pub fn histogram_bins(h: &Histogram<u64>, tsc_khz: u64, nbins: usize) -> Option<Binned> {
    if h.is_empty() || tsc_khz == 0 {
        return None;
    }
    let mut zeros = 0;
    let mut values = Vec::new();
    // The axis spans whole HdrHistogram buckets; each bucket's count sits at its middle.
    let (mut lo, mut hi) = (f64::INFINITY, 0f64);
    for v in h.iter_recorded() {
        let units = v.value_iterated_to();
        if units == 0 {
            zeros += v.count_at_value();
            continue;
        }
        lo = lo.min(units_to_ns(h.lowest_equivalent(units).max(1), tsc_khz));
        hi = hi.max(units_to_ns(h.highest_equivalent(units), tsc_khz));
        values.push((units_to_ns(h.median_equivalent(units), tsc_khz), v.count_at_value()));
    }
    if values.is_empty() {
        // Every sample was 0: one bar at the smallest value the histogram can tell from 0.
        lo = units_to_ns(1, tsc_khz);
        hi = lo;
    }
    // A distribution narrower than 10% still gets a readable width around it.
    if hi / lo < 1.1 {
        let mid = (hi * lo).sqrt();
        lo = mid / 1.06;
        hi = mid * 1.06;
    }
    let nbins = nbins.max(1);
    let ratio = (hi / lo).powf(1.0 / nbins as f64);
    let mut bins: Vec<Bin> = (0..nbins)
        .map(|i| Bin { lo: lo * ratio.powi(i as i32), hi: lo * ratio.powi(i as i32 + 1), count: 0 })
        .collect();
    for (ns, n) in values {
        let i = ((ns / lo).ln() / ratio.ln()).floor().clamp(0.0, (nbins - 1) as f64) as usize;
        bins[i].count += n;
    }
    bins[0].count += zeros;
    Some(Binned { bins, zeros })
}

fn percentile_ns(h: &Histogram<u64>, q: f64, tsc_khz: u64) -> f64 {
    units_to_ns(h.value_at_quantile(q), tsc_khz)
}

/// Latency histogram: x = ns (log), y = samples per bin (log, so single outliers show).
pub fn histogram_svg(h: &Histogram<u64>, tsc_khz: u64, size: (u32, u32)) -> Result<String, String> {
    let binned = histogram_bins(h, tsc_khz, 60).ok_or("no samples, or no TSC rate to convert them")?;
    let mut out = String::new();
    draw_histogram(&mut out, h, tsc_khz, &binned, size).map_err(|e| e.to_string())?;
    Ok(out)
}

fn draw_histogram(out: &mut String, h: &Histogram<u64>, tsc_khz: u64, b: &Binned, size: (u32, u32)) -> DrawResult {
    let root = SVGBackend::with_string(out, size).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled("latency histogram", (FONT, 17))?;
    let (xlo, xhi) = (b.bins[0].lo, b.bins[b.bins.len() - 1].hi);
    let ymax = b.bins.iter().map(|x| x.count).max().unwrap_or(1).max(1) as f64;
    // Headroom above the tallest bar keeps the percentile labels off the bars.
    let (ylo, yhi) = (0.7, ymax * 4.0);
    let mut chart = ChartBuilder::on(&root)
        .margin(12)
        .margin_right(24)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (xlo..xhi).log_scale().with_key_points(log_ticks(xlo, xhi, 8)),
            (ylo..yhi).log_scale().with_key_points(log_ticks(1.0, yhi, 7)),
        )?;
    chart
        .configure_mesh()
        .bold_line_style(GRID)
        .x_desc("latency per operation (log scale)")
        .y_desc("samples per bin (log scale)")
        .x_label_formatter(&|v| fmt_ns(*v))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()?;
    chart.draw_series(
        b.bins
            .iter()
            .filter(|x| x.count > 0)
            .map(|x| Rectangle::new([(x.lo, ylo), (x.hi, x.count as f64)], BAR.mix(0.85).filled())),
    )?;
    for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
        let v = percentile_ns(h, q, tsc_khz).clamp(xlo, xhi);
        let color = if q == 0.5 { BLACK } else { P99 };
        chart.draw_series(DashedLineSeries::new(vec![(v, ylo), (v, yhi)], 5, 4, color.stroke_width(1)))?;
        // Labels near the right edge grow leftwards so they stay inside the plot.
        let right = (v / xlo).ln() > 0.7 * (xhi / xlo).ln();
        let (text, anchor) = if right {
            (format!("{name} {} ", fmt_ns(v)), HPos::Right)
        } else {
            (format!(" {name} {}", fmt_ns(v)), HPos::Left)
        };
        let style = TextStyle::from((FONT, 13).into_font()).color(&color).pos(Pos::new(anchor, VPos::Top));
        chart.draw_series(std::iter::once(Text::new(text, (v, if q == 0.5 { yhi } else { yhi / 2.2 }), style)))?;
    }
    root.present()?;
    Ok(())
}

/// x positions of the percentile axis, 1/(1-q): 2 is the median, 10 is p90, 100 p99.
const PERCENTILE_TICKS: &[(f64, &str)] = &[
    (1.0, "0%"),
    (2.0, "50%"),
    (10.0, "90%"),
    (100.0, "99%"),
    (1e3, "99.9%"),
    (1e4, "99.99%"),
    (1e5, "99.999%"),
    (1e6, "99.9999%"),
];

/// (1/(1-q), ns) points of the percentile curve, up to the last percentile the sample
/// count can resolve (1 - 1/count), where the maximum is placed.
pub fn percentile_points(h: &Histogram<u64>, tsc_khz: u64) -> Vec<(f64, f64)> {
    let cap = (h.len() as f64).max(10.0);
    let mut pts: Vec<(f64, f64)> = Vec::new();
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        if q >= 1.0 {
            break;
        }
        let x = (1.0 / (1.0 - q)).min(cap);
        pts.push((x, units_to_ns(v.value_iterated_to(), tsc_khz)));
    }
    pts.push((cap, units_to_ns(h.max(), tsc_khz)));
    pts
}

/// (ns, q) points of the cumulative distribution, q being the share of samples at or
/// below ns: the percentile curve of `percentile_points` turned around. Points at 0 ns
/// are left out (a log axis cannot show them); the shares after them still count them.
pub fn cdf_points(h: &Histogram<u64>, tsc_khz: u64) -> Vec<(f64, f64)> {
    percentile_points(h, tsc_khz).into_iter().map(|(x, ns)| (ns, 1.0 - 1.0 / x)).filter(|(ns, _)| *ns > 0.0).collect()
}

/// The CDF as a staircase: each point is reached at the previous share, then climbs.
pub fn cdf_steps(pts: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut stepped = Vec::with_capacity(pts.len() * 2);
    let mut prev = 0.0;
    for &(ns, q) in pts {
        stepped.push((ns, prev));
        stepped.push((ns, q));
        prev = q;
    }
    stepped
}

/// Percentile plot in HdrHistogram style: x = percentile on a 1/(1-q) axis, y = ns.
pub fn percentile_svg(h: &Histogram<u64>, tsc_khz: u64, size: (u32, u32)) -> Result<String, String> {
    if h.is_empty() || tsc_khz == 0 {
        return Err("no samples, or no TSC rate to convert them".into());
    }
    let mut out = String::new();
    draw_percentiles(&mut out, h, tsc_khz, size).map_err(|e| e.to_string())?;
    Ok(out)
}

fn draw_percentiles(out: &mut String, h: &Histogram<u64>, tsc_khz: u64, size: (u32, u32)) -> DrawResult {
    let pts = percentile_points(h, tsc_khz);
    let xhi = pts.last().map(|p| p.0).unwrap_or(10.0);
    let min_pos = pts.iter().map(|p| p.1).filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
    let ymax = pts.iter().map(|p| p.1).fold(0f64, f64::max);
    let ylo = if min_pos.is_finite() { min_pos / 1.25 } else { units_to_ns(1, tsc_khz) };
    let yhi = (ymax * 1.25).max(ylo * 1.3);
    let xticks: Vec<f64> = PERCENTILE_TICKS.iter().map(|t| t.0).filter(|x| *x <= xhi).collect();
    let xfmt =
        |x: &f64| PERCENTILE_TICKS.iter().find(|t| (t.0 - x).abs() < 1e-9).map(|t| t.1.to_string()).unwrap_or_default();
    let root = SVGBackend::with_string(out, size).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled("latency by percentile", (FONT, 17))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(12).margin_right(24).x_label_area_size(48).y_label_area_size(64);
    let x = (1.0..xhi).log_scale().with_key_points(xticks);
    // Tails of several decades need a log y axis; a narrow distribution reads better linear.
    if yhi / ylo > 10.0 {
        let mut chart =
            builder.build_cartesian_2d(x, (ylo..yhi).log_scale().with_key_points(log_ticks(ylo, yhi, 8)))?;
        mesh_and_curve(&mut chart, &pts, "latency (log scale)", xfmt)?;
    } else {
        let lo = (ylo - (yhi - ylo) * 0.1).max(0.0);
        let mut chart = builder.build_cartesian_2d(x, LinAxis { lo, hi: yhi, ticks: linear_ticks(lo, yhi, 6) })?;
        mesh_and_curve(&mut chart, &pts, "latency", xfmt)?;
    }
    root.present()?;
    Ok(())
}

fn mesh_and_curve<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    pts: &[(f64, f64)],
    ydesc: &str,
    xfmt: impl Fn(&f64) -> String,
) -> DrawResult
where
    X: Ranged<ValueType = f64, FormatOption = plotters::coord::ranged1d::DefaultFormatting>,
    Y: Ranged<ValueType = f64, FormatOption = plotters::coord::ranged1d::DefaultFormatting>,
{
    chart
        .configure_mesh()
        .bold_line_style(GRID)
        .x_desc("percentile (log scale of 1/(1-q))")
        .y_desc(ydesc)
        .x_label_formatter(&xfmt)
        .y_label_formatter(&|v| fmt_ns(*v))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()?;
    chart.draw_series(LineSeries::new(pts.iter().copied(), BAR.stroke_width(2)))?;
    Ok(())
}

/// The label of a horizontal bar chart's row at axis position `v` (rows are drawn top
/// down, so the first label sits at the top); empty between rows.
fn row_label(labels: &[String], v: f64) -> String {
    let n = labels.len();
    let i = v.round();
    if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
        labels[n - 1 - i as usize].clone()
    } else {
        String::new()
    }
}

/// One probe in the budget chart.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetBar {
    pub label: String,
    pub p50_ns: f64,
    pub p99_ns: f64,
    /// The talk's ns figure for this operation, when it gives one.
    pub seed_ns: Option<f64>,
}

/// Horizontal bars of p50 (p99 as a marker) on a log ns axis, with the per-packet budgets
/// drawn as vertical lines: a bar that crosses a line cannot be paid once per packet on
/// one core at that line rate.
pub fn budget_svg(bars: &[BudgetBar], budgets: &[(f64, &str)], width: u32) -> Result<String, String> {
    if bars.is_empty() {
        return Err("no probe of the chart has an ok row in this run".into());
    }
    let mut out = String::new();
    // A spare band below the last bar holds the legend clear of bars and markers.
    let height = 110 + 34 * bars.len() as u32 + LEGEND_BAND_PX;
    draw_budget(&mut out, bars, budgets, (width, height)).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Pixel height of the legend band under the budget chart's bars (rows are 34 px).
const LEGEND_BAND_PX: u32 = 96;

fn draw_budget(out: &mut String, bars: &[BudgetBar], budgets: &[(f64, &str)], size: (u32, u32)) -> DrawResult {
    let vals =
        bars.iter().flat_map(|b| [b.p50_ns, b.p99_ns].into_iter().chain(b.seed_ns)).chain(budgets.iter().map(|b| b.0));
    let (mn, mx) = vals.filter(|v| *v > 0.0).fold((f64::INFINITY, 0f64), |(a, b), v| (a.min(v), b.max(v)));
    let (xlo, xhi) = (mn / 2.0, mx * 2.0);
    let n = bars.len();
    let ybottom = -0.6 - f64::from(LEGEND_BAND_PX) / 34.0;
    // Row 0 at the top.
    let y_of = |i: usize| (n - 1 - i) as f64;
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    let root = SVGBackend::with_string(out, size).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled("cost per operation against the per-packet budget at 64-byte line rate", (FONT, 17))?;
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(10) as u32;
    let mut chart = ChartBuilder::on(&root)
        .margin(12)
        .margin_right(30)
        .margin_top(30)
        .x_label_area_size(48)
        .y_label_area_size((longest * 8 + 20).min(360))
        .build_cartesian_2d(
            (xlo..xhi).log_scale().with_key_points(log_ticks(xlo, xhi, 12)),
            LinAxis { lo: ybottom, hi: n as f64 - 0.4, ticks: (0..n).map(|i| i as f64).collect() },
        )?;
    chart
        .configure_mesh()
        .bold_line_style(GRID)
        .x_desc("latency per operation (log scale)")
        .x_label_formatter(&|v| fmt_ns(*v))
        .y_label_formatter(&|v| row_label(&labels, *v))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()?;
    chart
        .draw_series(
            bars.iter().enumerate().map(|(i, b)| {
                Rectangle::new([(xlo, y_of(i) - 0.32), (b.p50_ns, y_of(i) + 0.32)], BAR.mix(0.85).filled())
            }),
        )?
        .label("measured p50 (bar)")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], BAR.mix(0.85).filled()));
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| TriangleMarker::new((b.p99_ns, y_of(i)), 7, P99.filled())))?
        .label("measured p99")
        .legend(|(x, y)| TriangleMarker::new((x + 8, y), 6, P99.filled()));
    chart
        .draw_series(
            bars.iter()
                .enumerate()
                .filter_map(|(i, b)| b.seed_ns.map(|s| Circle::new((s, y_of(i)), 6, SEED.stroke_width(3)))),
        )?
        .label("2014 figure (Haswell 3.2 GHz)")
        .legend(|(x, y)| Circle::new((x + 8, y), 5, SEED.stroke_width(3)));
    for (ns, name) in budgets {
        chart.draw_series(DashedLineSeries::new(
            vec![(*ns, ybottom), (*ns, n as f64 - 0.4)],
            6,
            4,
            BLACK.stroke_width(2),
        ))?;
        let style = TextStyle::from((FONT, 14).into_font()).pos(plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Center,
            plotters::style::text_anchor::VPos::Bottom,
        ));
        chart.draw_series(std::iter::once(Text::new(name.to_string(), (*ns, n as f64 - 0.4), style)))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 14))
        .draw()?;
    root.present()?;
    Ok(())
}

/// One bar of the throughput chart: a path row at one frame size.
pub struct RateBar {
    pub label: String,
    pub mpps: f64,
    /// Line rates at this row's frame length (Mpps), with their names (`10GbE`, ...).
    pub line_rates: Vec<(f64, &'static str)>,
}

/// Horizontal Mpps bars (log scale), each row with its own line-rate markers (they depend
/// on the frame length) and one dashed line for a reference rate drawn across all rows.
pub fn rate_svg(bars: &[RateBar], reference: (f64, &str), width: u32) -> Result<String, String> {
    if bars.is_empty() {
        return Err("no throughput row is ok in this run".into());
    }
    let mut out = String::new();
    let height = 110 + 34 * bars.len() as u32 + LEGEND_BAND_PX;
    draw_rates(&mut out, bars, reference, (width, height)).map_err(|e| e.to_string())?;
    Ok(out)
}

fn draw_rates(out: &mut String, bars: &[RateBar], reference: (f64, &str), size: (u32, u32)) -> DrawResult {
    let vals =
        bars.iter().flat_map(|b| std::iter::once(b.mpps).chain(b.line_rates.iter().map(|l| l.0))).chain([reference.0]);
    let (mn, mx) = vals.filter(|v| *v > 0.0).fold((f64::INFINITY, 0f64), |(a, b), v| (a.min(v), b.max(v)));
    let (xlo, xhi) = (mn / 2.0, mx * 2.0);
    let n = bars.len();
    let ybottom = -0.6 - f64::from(LEGEND_BAND_PX) / 34.0;
    let y_of = |i: usize| (n - 1 - i) as f64;
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    let root = SVGBackend::with_string(out, size).into_drawing_area();
    root.fill(&WHITE)?;
    let root =
        root.titled("packets per second received, against Ethernet line rate at each row's frame size", (FONT, 17))?;
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(10) as u32;
    let mut chart = ChartBuilder::on(&root)
        .margin(12)
        .margin_right(30)
        .margin_top(30)
        .x_label_area_size(48)
        .y_label_area_size((longest * 8 + 20).min(420))
        .build_cartesian_2d(
            (xlo..xhi).log_scale().with_key_points(log_ticks(xlo, xhi, 12)),
            LinAxis { lo: ybottom, hi: n as f64 - 0.4, ticks: (0..n).map(|i| i as f64).collect() },
        )?;
    chart
        .configure_mesh()
        .bold_line_style(GRID)
        .x_desc("Mpps received (log scale)")
        .x_label_formatter(&|v| {
            let s = format!("{v:.3}");
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        })
        .y_label_formatter(&|v| row_label(&labels, *v))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()?;
    chart
        .draw_series(
            bars.iter().enumerate().map(|(i, b)| {
                Rectangle::new([(xlo, y_of(i) - 0.32), (b.mpps, y_of(i) + 0.32)], BAR.mix(0.85).filled())
            }),
        )?
        .label("measured Mpps (bar)")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], BAR.mix(0.85).filled()));
    let colors = [P99, SEED, RGBColor(120, 60, 160), BLACK];
    let names: Vec<&'static str> = bars.first().map(|b| b.line_rates.iter().map(|l| l.1).collect()).unwrap_or_default();
    for (k, name) in names.iter().enumerate() {
        let c = colors[k % colors.len()];
        chart
            .draw_series(
                bars.iter().enumerate().filter_map(|(i, b)| {
                    b.line_rates.get(k).map(|l| TriangleMarker::new((l.0, y_of(i)), 7, c.filled()))
                }),
            )?
            .label(format!("{name} line rate at that size"))
            .legend(move |(x, y)| TriangleMarker::new((x + 8, y), 6, c.filled()));
    }
    chart.draw_series(DashedLineSeries::new(
        vec![(reference.0, ybottom), (reference.0, n as f64 - 0.4)],
        6,
        4,
        BLACK.stroke_width(2),
    ))?;
    let style = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart.draw_series(std::iter::once(Text::new(reference.1.to_string(), (reference.0, n as f64 - 0.4), style)))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 14))
        .draw()?;
    root.present()?;
    Ok(())
}

/// One row's line in the overlaid CDF chart.
pub struct CdfLine {
    pub label: String,
    /// (ns, share at or below) points, from `cdf_points`.
    pub points: Vec<(f64, f64)>,
}

/// Colours of overlaid lines (Tableau 10); lines past the tenth repeat them dashed, past
/// the twentieth dotted (`LINE_DASHES`).
const LINE_COLORS: [RGBColor; 10] = [
    BAR,
    RGBColor(242, 142, 43),
    RGBColor(225, 87, 89),
    RGBColor(118, 183, 178),
    RGBColor(89, 161, 79),
    RGBColor(237, 201, 72),
    RGBColor(176, 122, 161),
    RGBColor(255, 157, 167),
    RGBColor(156, 117, 95),
    RGBColor(186, 176, 172),
];

/// Dash and gap lengths (px) of each round of the colours: solid, dashed, dotted.
const LINE_DASHES: [Option<(u32, u32)>; 3] = [None, Some((6, 4)), Some((2, 3))];

/// The colour and dash pattern of overlaid line `i`.
fn line_look(i: usize) -> (ShapeStyle, Option<(u32, u32)>) {
    let n = LINE_COLORS.len();
    (LINE_COLORS[i % n].stroke_width(2), LINE_DASHES[(i / n) % LINE_DASHES.len()])
}

/// Height of the chart above the legend, and of one legend line.
const CDF_CHART_PX: u32 = 440;
const CDF_LEGEND_LINE_PX: u32 = 20;

/// Overlaid cumulative distributions, one line per row: x = latency (log), y = share of
/// samples at or below it. The legend sits under the chart (two columns when there are
/// many lines), so that no line hides behind it.
pub fn cdf_overlay_svg(lines: &[CdfLine], width: u32) -> Result<String, String> {
    let lines: Vec<&CdfLine> = lines.iter().filter(|l| !l.points.is_empty()).collect();
    if lines.is_empty() {
        return Err("no row has latency samples above 0 ns".into());
    }
    let ns = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let (mn, mx) = ns.fold((f64::INFINITY, 0f64), |(a, b), v| (a.min(v), b.max(v)));
    let lo = mn / 1.2;
    let hi = (mx * 1.2).max(lo * 1.5);
    let columns = if lines.len() > 6 { 2 } else { 1 };
    let legend_px = 16 + CDF_LEGEND_LINE_PX * lines.len().div_ceil(columns) as u32;
    let mut out = String::new();
    draw_cdf_overlay(&mut out, &lines, (lo, hi), columns, (width, CDF_CHART_PX + legend_px))
        .map_err(|e| e.to_string())?;
    Ok(out)
}

fn draw_cdf_overlay(
    out: &mut String,
    lines: &[&CdfLine],
    (lo, hi): (f64, f64),
    columns: usize,
    size: (u32, u32),
) -> DrawResult {
    let root = SVGBackend::with_string(out, size).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled("one-way latency: cumulative distribution of each path row", (FONT, 17))?;
    let (upper, legend) = root.split_vertically(CDF_CHART_PX - 30);
    let mut chart = ChartBuilder::on(&upper)
        .margin(12)
        .margin_right(30)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (lo..hi).log_scale().with_key_points(log_ticks(lo, hi, 12)),
            LinAxis { lo: 0.0, hi: 1.0, ticks: linear_ticks(0.0, 1.0, 5) },
        )?;
    chart
        .configure_mesh()
        .bold_line_style(GRID)
        .x_desc("one-way latency (log scale)")
        .y_desc("share of samples at or below")
        .x_label_formatter(&|v| fmt_ns(*v))
        .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()?;
    for (i, l) in lines.iter().enumerate() {
        let steps = cdf_steps(&l.points);
        match line_look(i) {
            (style, None) => chart.draw_series(LineSeries::new(steps, style))?,
            (style, Some((dash, gap))) => chart.draw_series(DashedLineSeries::new(steps, dash, gap, style))?,
        };
    }
    // The legend: a short stroke in the line's colour and dash pattern, then the row's label.
    let (w, _) = legend.dim_in_pixel();
    let col_w = (w as i32 - 40) / columns as i32;
    let rows = lines.len().div_ceil(columns);
    let text = TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, l) in lines.iter().enumerate() {
        let (col, row) = (i / rows, i % rows);
        let x = 40 + col as i32 * col_w;
        let y = 12 + (row as u32 * CDF_LEGEND_LINE_PX) as i32;
        let (style, dashes) = line_look(i);
        let (dash, gap) = dashes.map(|(d, g)| (d as i32, g as i32)).unwrap_or((24, 0));
        let mut from = x;
        while from < x + 24 {
            legend.draw(&PathElement::new(vec![(from, y), ((from + dash).min(x + 24), y)], style))?;
            from += dash + gap;
        }
        legend.draw(&Text::new(l.label.clone(), (x + 30, y), text.clone()))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;

    fn hist(values_cycles: &[u64]) -> Histogram<u64> {
        let mut h = new_histogram();
        for v in values_cycles {
            h.record(v * HIST_UNITS_PER_CYCLE).unwrap();
        }
        h
    }

    #[test]
    fn ns_labels_carry_units() {
        assert_eq!(fmt_ns(250.0), "250 ns");
        assert_eq!(fmt_ns(0.48), "0.48 ns");
        assert_eq!(fmt_ns(1500.0), "1.5 µs");
        assert_eq!(fmt_ns(2_000_000.0), "2 ms");
        assert_eq!(fmt_ns(67.2), "67.2 ns");
    }

    #[test]
    fn log_ticks_are_readable() {
        assert_eq!(log_ticks(10.0, 1000.0, 8), vec![10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]);
        let wide = log_ticks(1.0, 1e9, 8);
        assert!(wide.len() <= 8 && wide.len() >= 4, "{wide:?}");
        let narrow = log_ticks(105.0, 130.0, 8);
        assert!(narrow.len() >= 2 && narrow.iter().all(|t| (105.0..=130.0).contains(t)), "{narrow:?}");
    }

    #[test]
    fn bins_hold_every_sample_and_span_the_tail() {
        let mut v = vec![100u64; 990];
        v.extend(std::iter::repeat_n(100_000u64, 10));
        let h = hist(&v);
        // 1 GHz: 1 cycle = 1 ns.
        let b = histogram_bins(&h, 1_000_000, 60).unwrap();
        assert_eq!(b.bins.iter().map(|x| x.count).sum::<u64>(), 1000);
        assert!(b.bins[0].lo <= 100.0 && b.bins.last().unwrap().hi >= 99_000.0);
        // Log bins: the tail three decades out has its own bar, not squashed into the body.
        assert_eq!(b.bins.last().unwrap().count, 10);
    }

    #[test]
    fn zero_samples_are_counted_not_dropped() {
        let h = hist(&[0, 0, 5, 6]);
        let b = histogram_bins(&h, 1_000_000, 10).unwrap();
        assert_eq!(b.zeros, 2);
        assert_eq!(b.bins.iter().map(|x| x.count).sum::<u64>(), 4);
    }

    #[test]
    fn percentile_points_rise_to_the_max() {
        let h = hist(&(1..=10_000).collect::<Vec<_>>());
        let p = percentile_points(&h, 1_000_000);
        assert!(p.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1), "not monotonic");
        let last = p.last().unwrap();
        assert_eq!(last.0, 10_000.0);
        assert!((last.1 - 10_000.0).abs() < 10.0);
        // The median sits at x = 2.
        let med = p.iter().find(|(x, _)| (*x - 2.0).abs() < 0.05).unwrap();
        assert!((med.1 - 5000.0).abs() < 50.0, "{med:?}");
    }

    #[test]
    fn svgs_are_drawn_with_labelled_axes() {
        let h = hist(&[100, 110, 120, 5000]);
        let s = histogram_svg(&h, 2_000_000, (600, 340)).unwrap();
        assert!(s.starts_with("<svg") && s.contains("samples per bin") && s.contains("latency per operation"));
        let p = percentile_svg(&h, 2_000_000, (600, 340)).unwrap();
        assert!(p.contains("percentile") && p.contains("50%"));
        let b = budget_svg(
            &[BudgetBar { label: "x".into(), p50_ns: 100.0, p99_ns: 200.0, seed_ns: Some(400.0) }],
            &[(67.2, "10GbE 67.2 ns")],
            900,
        )
        .unwrap();
        assert!(b.contains("67.2 ns") && b.contains("2014 figure"));
        assert!(histogram_svg(&new_histogram(), 2_000_000, (600, 340)).is_err());
        assert!(histogram_svg(&h, 0, (600, 340)).is_err());
    }
}
