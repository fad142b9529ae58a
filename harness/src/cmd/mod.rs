//! One module per subcommand. Each returns the process exit code.

pub mod baseline;
pub mod compare;
pub mod gate;
pub mod history;
pub mod env;
pub mod execute;
pub mod list;
pub mod publish;
pub mod report;
pub mod run;
pub mod show;
pub mod sweep;

use std::path::PathBuf;

/// Exit codes: 0 fine, 1 a flagged regression or a failed run, 2 bad input, 130 interrupted.
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_INTERRUPTED: u8 = 130;

/// Where runs go when --out is not given: `results/runs` relative to the current directory,
/// which is the checkout's own (git-ignored) `results/runs` when run from the repository root.
pub fn default_runs_dir() -> PathBuf {
    PathBuf::from("results").join("runs")
}

/// An error the user caused (unknown probe, bad config, unwritable directory): exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
