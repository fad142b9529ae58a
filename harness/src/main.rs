//! The `ivbench` command line: a clap parser and one function per subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use ivbench::cmd::{self, UsageError, EXIT_USAGE};
use ivbench::{errln, out};
use probe_api::{limits, Method};

// Range-checked parsers: a number out of range is an exit-2 message naming the range,
// never an abort or a backtrace later on.
fn parse_iterations(s: &str) -> Result<u64, String> {
    limits::parse_u64(s, limits::iterations)
}
fn parse_batch(s: &str) -> Result<u32, String> {
    limits::parse_u64(s, |n| limits::batch(n).map(u64::from)).map(|n| n as u32)
}
fn parse_timeout(s: &str) -> Result<Duration, String> {
    limits::parse_u64(s, |n| limits::timeout_s(n).map(|_| n)).map(Duration::from_secs)
}
fn parse_duration(s: &str) -> Result<Duration, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    limits::duration_s(v)
}
fn parse_cpu(s: &str) -> Result<usize, String> {
    let n: usize = s.trim().parse().map_err(|_| format!("`{s}` is not a CPU number"))?;
    limits::cpu(n)
}

#[derive(Parser)]
#[command(name = "ivbench", version, about = "Measures what communication between virtual machines on KVM really costs.", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum MethodArg {
    /// Serialized lfence;rdtsc around every operation; the timer's cost is subtracted (default).
    PerOp,
    /// --batch operations between one timestamp pair, divided: steady-state cost, no tail.
    Batched,
}

#[derive(Subcommand)]
enum Command {
    /// List every probe, grouped, with whether this host can run it (and why not).
    #[command(after_help = "Examples:\n  ivbench list\n  ivbench list --json | jq '.[] | select(.support != \"supported\")'")]
    List {
        #[arg(long)]
        json: bool,
    },
    /// Print the environment fingerprint recorded with every run.
    #[command(after_help = "Examples:\n  ivbench env\n  ivbench env --json > env.json")]
    Env {
        #[arg(long)]
        json: bool,
        /// CPUs the probes would pin to (recorded as the pinning).
        #[arg(long, value_delimiter = ',', default_value = "0,1", value_parser = parse_cpu)]
        cpus: Vec<usize>,
    },
    /// Run named probes (exact name, `prefix.*` or dotted prefix) into a new run directory.
    #[command(after_help = "Examples:\n  ivbench run host.syscall.getppid --iterations 100000\n  ivbench run host.memcpy --params size=1518 --method batched --batch 1000\n  ivbench run 'vm.exit.*' --cpus 1")]
    Run {
        #[arg(required = true)]
        probes: Vec<String>,
        /// Samples per point (per-op: operations; batched: batches), 1..=100000000. Default 10000.
        #[arg(long, conflicts_with = "duration", value_parser = parse_iterations)]
        iterations: Option<u64>,
        /// Seconds per point instead of a sample count (probes that honour it stop early).
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// CPUs to pin to: the measuring thread first, its partner second.
        #[arg(long, value_delimiter = ',', default_value = "0,1", value_parser = parse_cpu)]
        cpus: Vec<usize>,
        #[arg(long, value_enum, default_value = "per-op")]
        method: MethodArg,
        /// Operations per timestamp pair with --method batched, 1..=1000000.
        #[arg(long, default_value = "100", value_parser = parse_batch)]
        batch: u32,
        /// One parameter point instead of the probe's own, e.g. `size=64`.
        #[arg(long)]
        params: Option<String>,
        /// Seconds after which a point stops, 1..=86400: what it measured by then is kept,
        /// marked partial (failed only when it has no sample).
        #[arg(long, default_value = "120", value_parser = parse_timeout)]
        timeout: Duration,
        /// Parent directory of the run directory.
        #[arg(long, default_value_os_t = cmd::default_runs_dir())]
        out: PathBuf,
        /// Search each point's offered rate for NDR (no loss) and PDR (<= 0.5% loss):
        /// short trials narrow, full trials (--duration, default 1 s) confirm; every trial,
        /// the bounds and latency at no load and 10/50/90% of PDR become rows.
        #[arg(long)]
        ndr: bool,
    },
    /// Run a sweep: the embedded default, or --config FILE which replaces it.
    #[command(after_help = "Examples:\n  ivbench sweep --quick\n  ivbench sweep --print-default > my-sweep.toml && ivbench sweep --config my-sweep.toml")]
    Sweep {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Each entry's quick_iterations: the short sweep CI runs (under 30 s).
        #[arg(long)]
        quick: bool,
        /// Print the embedded default sweep and exit.
        #[arg(long)]
        print_default: bool,
        /// Do not write report.html at the end.
        #[arg(long)]
        no_report: bool,
        #[arg(long, default_value_os_t = cmd::default_runs_dir())]
        out: PathBuf,
    },
    /// Show a stored run as a table: a run directory, a run id, or `latest`.
    #[command(after_help = "Examples:\n  ivbench show latest\n  ivbench show results/runs/20261130T120000Z-1a2b3c")]
    Show {
        run: String,
        /// Where run ids and `latest` are looked up.
        #[arg(long, default_value_os_t = cmd::default_runs_dir())]
        runs: PathBuf,
    },
    /// Render a stored run as one self-contained HTML page (inline SVG, no network assets).
    ///
    /// Reads only the run directory: summary table, latency histogram and percentile plot per
    /// point, the per-packet budget chart, the 2014 seed figures beside this run's, and the
    /// environment fingerprint. Writes report.html into the run directory unless --out.
    #[command(after_help = "Examples:\n  ivbench report latest\n  ivbench report results/runs/20261130T120000Z-1a2b3c --out /tmp/r.html")]
    Report {
        /// A run directory, a run id, or `latest`.
        run: String,
        /// Where to write the page (default: RUN/report.html).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where run ids and `latest` are looked up.
        #[arg(long, default_value_os_t = cmd::default_runs_dir())]
        runs: PathBuf,
    },
    /// Compare two stored runs point by point; exit 1 when a regression is flagged.
    ///
    /// Rows are matched by probe + params + method. p50 and p99 are compared as the factor
    /// NEW/BASE of their ns figures. A change is flagged only when the factor (or BASE/NEW
    /// for an improvement) exceeds BOTH 1 + --threshold AND the runs' own noise, read from
    /// their stored histograms:
    ///   p50 noise = the larger of the two runs' p75/p25 (interquartile factor);
    ///   p99 noise = the larger of the two runs' p99.9/p90 (tail factor, a wider band).
    /// A row is a regression when p50 or p99 regressed. Verdicts: regression, improvement,
    /// same (within noise), missing in base/new, lost (ok in base, not ok in new), not
    /// comparable (not ok in base).
    /// Points without a stored histogram are judged by the threshold alone. The spread is
    /// within-run, so compare warns when the machines differ (CPU, kernel, KVM backend, TSC
    /// rate) or the timer's own cost moved between the runs.
    ///
    /// --format bmf prints Bencher Metric Format for NEW's ok rows:
    ///   {"<key>": {"latency": {"value": p50_ns, "lower_value": min_ns, "upper_value": p99_ns}}}
    ///
    /// A row ok in BASE that is missing from NEW or not ok there ("lost") fails the gate
    /// like a regression, and so does a NEW run without a single ok row.
    ///
    /// Exit status (every format): 0 nothing failed, 1 a regression, a lost or missing
    /// row, or an empty NEW run; 2 bad input.
    #[command(verbatim_doc_comment, after_help = "Examples:\n  ivbench compare results/baselines/ref latest\n  ivbench compare BASE NEW --format json --threshold 0.05\n  ivbench compare BASE NEW --format bmf > bmf.json")]
    Compare {
        /// The reference run (directory, run id, or `latest`).
        base: String,
        /// The run to judge.
        new: String,
        #[arg(long, value_enum, default_value = "table")]
        format: FormatArg,
        /// Smallest relative change that can be flagged (0.10 = 10%), noise permitting.
        #[arg(long, default_value_t = 0.10)]
        threshold: f64,
        /// Where run ids and `latest` are looked up.
        #[arg(long, default_value_os_t = cmd::default_runs_dir())]
        runs: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    /// A terminal table and a one-line tally.
    Table,
    /// The full comparison, machine-readable.
    Json,
    /// Bencher Metric Format of the NEW run, for CI dashboards.
    Bmf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::List { json } => cmd::list::list(json),
        Command::Env { json, cpus } => cmd::env::env(json, &cpus),
        Command::Run { probes, iterations, duration, cpus, method, batch, params, timeout, out, ndr } => cmd::run::run(cmd::run::RunArgs {
            probes,
            iterations,
            duration,
            cpus,
            method: match method {
                MethodArg::PerOp => Method::PerOp,
                MethodArg::Batched => Method::Batched { batch },
            },
            params,
            out,
            timeout,
            ndr,
        }),
        Command::Sweep { config, quick, print_default, no_report, out } => {
            if print_default {
                out!("{}", ivbench::config::DEFAULT_SWEEP);
                Ok(0)
            } else {
                cmd::sweep::sweep(config.as_deref(), quick, &out, !no_report)
            }
        }
        Command::Show { run, runs } => cmd::show::show(&run, &runs),
        Command::Report { run, out, runs } => cmd::report::report(&run, &runs, out.as_deref()),
        Command::Compare { base, new, format, threshold, runs } => {
            let format = match format {
                FormatArg::Table => cmd::compare::Format::Table,
                FormatArg::Json => cmd::compare::Format::Json,
                FormatArg::Bmf => cmd::compare::Format::Bmf,
            };
            cmd::compare::compare(&base, &new, &runs, format, threshold)
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            errln!("ivbench: error: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
