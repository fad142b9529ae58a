//! `report.html`: one self-contained page per run, rendered from the run directory alone
//! (manifest, summary.csv, hlog), never from a live measurement.
//!
//! plots.rs draws SVG with plotters, seed.rs holds the 2014 figures and budgets the project
//! is measured against, html.rs assembles and escapes the page, throughput.rs
//! draws the path.* rows against line rate.

pub mod html;
pub mod plots;
pub mod seed;
pub mod throughput;

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::store::atomic::write_atomic;
use crate::store::LoadedRun;

/// The file name a report takes inside its run directory.
pub const REPORT_FILE: &str = "report.html";

pub fn render(run: &LoadedRun) -> String {
    html::page(run)
}

/// Renders `run` to `out`, or to report.html in its own directory.
pub fn write(run: &LoadedRun, out: Option<&Path>) -> Result<PathBuf> {
    let path = out.map(Path::to_path_buf).unwrap_or_else(|| run.path.join(REPORT_FILE));
    write_atomic(&path, render(run).as_bytes())?;
    Ok(path)
}
