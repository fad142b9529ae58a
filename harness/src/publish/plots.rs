//! The site's own charts: a CDF per point and a trend per probe point across runs. SVG
//! strings from plotters, ticks from the report's helpers so both read alike.

use std::error::Error;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::report::plots::{cdf_points, cdf_steps, fmt_ns, log_ticks};

type DrawResult = Result<(), Box<dyn Error>>;

const FONT: &str = "sans-serif";
const P50: RGBColor = RGBColor(70, 120, 180);
const P99: RGBColor = RGBColor(200, 80, 40);
const GRID: RGBColor = RGBColor(225, 225, 225);

/// Cumulative distribution: x = latency (log), y = share of samples at or below it.
pub fn cdf_svg(h: &Histogram<u64>, tsc_khz: u64, size: (u32, u32)) -> Result<String, String> {
    if h.is_empty() || tsc_khz == 0 {
        return Err("no samples, or no TSC rate to convert them".into());
    }
    let pts = cdf_points(h, tsc_khz);
    if pts.is_empty() {
        return Err("every sample is 0 ns: nothing to draw on a log axis".into());
    }
    let lo = pts.iter().map(|p| p.0).fold(f64::INFINITY, f64::min) / 1.2;
    let hi = (pts.iter().map(|p| p.0).fold(0f64, f64::max) * 1.2).max(lo * 1.5);
    let mut out = String::new();
    draw_cdf(&mut out, &pts, lo, hi, size).map_err(|e| e.to_string())?;
    Ok(out)
}

fn draw_cdf(out: &mut String, pts: &[(f64, f64)], lo: f64, hi: f64, size: (u32, u32)) -> DrawResult {
    let root = SVGBackend::with_string(out, size).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled("cumulative distribution", (FONT, 17))?;
    let mut chart = ChartBuilder::on(&root)
        .margin(12)
        .margin_right(24)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((lo..hi).log_scale().with_key_points(log_ticks(lo, hi, 8)), 0.0..1.0)?;
    chart
        .configure_mesh()
        .bold_line_style(GRID)
        .x_desc("latency (log scale)")
        .y_desc("share of samples at or below")
        .x_label_formatter(&|v| fmt_ns(*v))
        .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()?;
    chart.draw_series(LineSeries::new(cdf_steps(pts), P50.stroke_width(2)))?;
    root.present()?;
    Ok(())
}

/// One run's figure in a trend.
pub struct TrendSample {
    pub label: String,
    pub p50_ns: f64,
    pub p99_ns: f64,
}

/// p50 and p99 of one probe point across runs, oldest left; runs are evenly spaced (their
/// order matters, not their distance in time), labelled by date.
pub fn trend_svg(samples: &[TrendSample], size: (u32, u32)) -> Result<String, String> {
    let good: Vec<&TrendSample> = samples
        .iter()
        .filter(|s| s.p50_ns > 0.0 && s.p99_ns > 0.0 && s.p50_ns.is_finite() && s.p99_ns.is_finite())
        .collect();
    if good.is_empty() {
        return Err("no run with a positive p50 and p99".into());
    }
    let lo = good.iter().map(|s| s.p50_ns).fold(f64::INFINITY, f64::min) / 1.3;
    let hi = (good.iter().map(|s| s.p99_ns).fold(0f64, f64::max) * 1.3).max(lo * 2.0);
    let mut out = String::new();
    draw_trend(&mut out, &good, lo, hi, size).map_err(|e| e.to_string())?;
    Ok(out)
}

fn draw_trend(out: &mut String, s: &[&TrendSample], lo: f64, hi: f64, size: (u32, u32)) -> DrawResult {
    let n = s.len();
    let root = SVGBackend::with_string(out, size).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled("across runs (p50 and p99)", (FONT, 17))?;
    let xr = -0.5..(n as f64 - 0.5).max(0.5);
    let mut chart = ChartBuilder::on(&root)
        .margin(12)
        .margin_right(24)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(xr, (lo..hi).log_scale().with_key_points(log_ticks(lo, hi, 8)))?;
    let labels: Vec<String> = s.iter().map(|t| t.label.clone()).collect();
    chart
        .configure_mesh()
        .bold_line_style(GRID)
        .x_labels(n.min(8))
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                labels[i as usize].clone()
            } else {
                String::new()
            }
        })
        .x_desc("run (oldest left)")
        .y_desc("latency (log scale)")
        .y_label_formatter(&|v| fmt_ns(*v))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 15))
        .draw()?;
    for (pick, color, name) in [(0usize, P50, "p50"), (1, P99, "p99")] {
        let pts: Vec<(f64, f64)> =
            s.iter().enumerate().map(|(i, t)| (i as f64, if pick == 0 { t.p50_ns } else { t.p99_ns })).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(GRID)
        .label_font((FONT, 13))
        .draw()?;
    root.present()?;
    Ok(())
}
