//! The result store: one directory per run, the only thing report/compare/show read.
//!
//! ```text
//! <out>/<UTC-timestamp>-<short-id>/
//!     manifest.json     what ran, where, when; `status` is "partial" until the run ends
//!     summary.csv       one row per probe x parameter point (the column contract)
//!     hlog/<probe>.hlog HdrHistogram interval log, one tagged histogram per point
//!     report.html       written by `ivbench report` (and at the end of a sweep)
//! ```
//! Every file is written to a temporary name and renamed, so a reader never sees half a
//! file and an interrupted run keeps every probe that finished.

pub mod atomic;
pub mod baseline;
pub mod hlog;
pub mod lock;
pub mod manifest;
pub mod read;
pub mod run_dir;
pub mod summary;

pub use manifest::{Manifest, RunStatus};
pub use run_dir::{load_run, LoadedRun, RunDir};
pub use summary::{Status, SummaryRow};
