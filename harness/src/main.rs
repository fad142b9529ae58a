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
    #[command(
        after_help = "Examples:\n  ivbench list\n  ivbench list --json | jq '.[] | select(.support != \"supported\")'"
    )]
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
    #[command(
        after_help = "Examples:\n  ivbench run host.syscall.getppid --iterations 100000\n  ivbench run host.memcpy --params size=1518 --method batched --batch 1000\n  ivbench run 'vm.exit.*' --cpus 1"
    )]
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
    #[command(
        after_help = "Examples:\n  ivbench sweep --quick\n  ivbench sweep --print-default > my-sweep.toml && ivbench sweep --config my-sweep.toml"
    )]
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
    #[command(
        after_help = "Examples:\n  ivbench show latest\n  ivbench show results/runs/20261130T120000Z-1a2b3c\n  ivbench show latest --format json | jq .rows[0]\n  ivbench show latest --format csv"
    )]
    Show {
        run: String,
        /// table (people), json (run facts and rows) or csv (summary.csv's columns).
        #[arg(long, value_enum, default_value = "table")]
        format: ShowFormatArg,
        /// Where run ids and `latest` are looked up.
        #[arg(long, default_value_os_t = cmd::default_runs_dir())]
        runs: PathBuf,
    },
    /// Render a stored run as one self-contained HTML page (inline SVG, no network assets).
    ///
    /// Reads only the run directory: summary table, latency histogram and percentile plot per
    /// point, the per-packet budget chart, the 2014 seed figures beside this run's, and the
    /// environment fingerprint. Writes report.html into the run directory unless --out.
    #[command(
        after_help = "Examples:\n  ivbench report latest\n  ivbench report results/runs/20261130T120000Z-1a2b3c --out /tmp/r.html"
    )]
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
    #[command(
        verbatim_doc_comment,
        after_help = "Examples:\n  ivbench compare results/baselines/ref latest\n  ivbench compare BASE NEW --format json --threshold 0.05\n  ivbench compare BASE NEW --format bmf > bmf.json"
    )]
    Compare {
        /// BASE NEW (two runs: directory, run id, or `latest`), or NEW alone with --baseline.
        #[arg(required = true, num_args = 1..=2)]
        runs_args: Vec<String>,
        /// Compare NEW with the committed baseline of this name for NEW's own machine class
        /// (results/baselines/<class>/<name>/). A class without one passes with a note.
        #[arg(long)]
        baseline: Option<String>,
        /// Where the baselines are.
        #[arg(long, default_value_os_t = ivbench::store::baseline::default_root())]
        baselines: PathBuf,
        /// Compare runs of different machine classes anyway.
        #[arg(long)]
        force: bool,
        #[arg(long, value_enum, default_value = "table")]
        format: FormatArg,
        /// Smallest relative change that can be flagged (0.10 = 10%), noise permitting.
        #[arg(long, default_value_t = 0.10)]
        threshold: f64,
        /// Where run ids and `latest` are looked up.
        #[arg(long, default_value_os_t = cmd::default_runs_dir())]
        runs: PathBuf,
    },
    /// Baselines per machine class: promote a run, measure the run-to-run spread.
    #[command(
        after_help = "Examples:\n  ivbench baseline update latest --name quick\n  ivbench baseline spread R1 R2 R3 R4 R5 --name quick"
    )]
    Baseline {
        #[command(subcommand)]
        action: BaselineCmd,
    },
    /// A probe's figures across runs, from the SQLite history (synced from the run
    /// directories first). Without PROBE: the runs it indexes.
    #[command(
        after_help = "Examples:\n  ivbench history host.syscall.getppid\n  ivbench history host.memcpy --params size=64 --method per-op --since 2026-12-01\n  sqlite3 results/history.sqlite 'SELECT probe, p50_ns FROM rows LIMIT 5'"
    )]
    History {
        probe: Option<String>,
        #[arg(long)]
        params: Option<String>,
        /// `per-op` or `batched/K`.
        #[arg(long)]
        method: Option<String>,
        /// Only runs started on or after this UTC date or time.
        #[arg(long)]
        since: Option<String>,
        /// The database (derived from the run directories; safe to delete).
        #[arg(long, default_value_os_t = ivbench::history::default_path())]
        db: PathBuf,
        /// Delete the database and build it again from the run directories.
        #[arg(long)]
        rebuild: bool,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_os_t = cmd::default_runs_dir())]
        runs: PathBuf,
        #[arg(long, default_value_os_t = ivbench::store::baseline::default_root())]
        baselines: PathBuf,
    },
    /// Write a static site of runs (every run under --runs when none is named): an index,
    /// a page per run and per probe (histogram, CDF, percentiles, .hlog, trend across
    /// runs) and the machine classes side by side. Self-contained, no network assets.
    #[command(
        after_help = "Examples:\n  ivbench publish --out site\n  ivbench publish RUN1 RUN2 --out /tmp/site && chromium /tmp/site/index.html"
    )]
    Publish {
        run_list: Vec<String>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_os_t = cmd::default_runs_dir())]
        runs: PathBuf,
        #[arg(long, default_value_os_t = ivbench::store::baseline::default_root())]
        baselines: PathBuf,
        #[arg(long, default_value_os_t = ivbench::history::default_path())]
        db: PathBuf,
    },
    /// The CI regression gate: NEW against the baseline of its machine class; flagged rows
    /// are measured again and count only when the re-measurements confirm them.
    ///
    /// Exit status: 0 pass (also when the class has no baseline: a loud note says so),
    /// 1 a confirmed regression or a row lost or missing in NEW, 2 bad input.
    #[command(
        after_help = "Examples:\n  ivbench sweep --quick --out target/ci-runs && ivbench gate latest --runs target/ci-runs"
    )]
    Gate {
        /// The run to judge (directory, run id, or `latest`).
        new: String,
        /// Which baseline of NEW's machine class.
        #[arg(long, default_value = "quick")]
        baseline: String,
        #[arg(long, default_value_os_t = ivbench::store::baseline::default_root())]
        baselines: PathBuf,
        /// Re-measurements of each flagged point (their median decides).
        #[arg(long, default_value_t = 3)]
        remeasure: u32,
        #[arg(long, default_value_t = 0.10)]
        threshold: f64,
        /// Where run ids and `latest` are looked up, and where re-measurements are stored.
        #[arg(long, default_value_os_t = cmd::default_runs_dir())]
        runs: PathBuf,
    },
}

#[derive(Subcommand)]
enum BaselineCmd {
    /// Copy RUN to results/baselines/<its machine class>/<name>/ (refuses partial, failed,
    /// partial-row and emulated runs).
    Update {
        run: String,
        #[arg(long, default_value = "quick")]
        name: String,
        #[arg(long, default_value_os_t = ivbench::store::baseline::default_root())]
        baselines: PathBuf,
        #[arg(long, default_value_os_t = cmd::default_runs_dir())]
        runs: PathBuf,
    },
    /// Measure the run-to-run spread over repeated unchanged runs of one machine class
    /// and store it beside that class's baseline (spread.json): the gate's noise floor.
    Spread {
        #[arg(required = true, num_args = 2..)]
        run_list: Vec<String>,
        #[arg(long, default_value = "quick")]
        name: String,
        #[arg(long, default_value_os_t = ivbench::store::baseline::default_root())]
        baselines: PathBuf,
        #[arg(long, default_value_os_t = cmd::default_runs_dir())]
        runs: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ShowFormatArg {
    Table,
    Json,
    Csv,
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
    // `ivbench __ivbench-vm-worker <name>`: this process is a VM worker of another ivbench
    // (hidden; see guest_probes::worker). Otherwise it may start workers of its own.
    guest_probes::worker::serve_if_worker();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::List { json } => cmd::list::list(json),
        Command::Env { json, cpus } => cmd::env::env(json, &cpus),
        Command::Run { probes, iterations, duration, cpus, method, batch, params, timeout, out, ndr } => {
            cmd::run::run(cmd::run::RunArgs {
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
            })
        }
        Command::Sweep { config, quick, print_default, no_report, out } => {
            if print_default {
                out!("{}", ivbench::config::DEFAULT_SWEEP);
                Ok(0)
            } else {
                cmd::sweep::sweep(config.as_deref(), quick, &out, !no_report)
            }
        }
        Command::Show { run, format, runs } => {
            use cmd::show::ShowFormat;
            let f = match format {
                ShowFormatArg::Table => ShowFormat::Table,
                ShowFormatArg::Json => ShowFormat::Json,
                ShowFormatArg::Csv => ShowFormat::Csv,
            };
            cmd::show::show(&run, &runs, f)
        }
        Command::Report { run, out, runs } => cmd::report::report(&run, &runs, out.as_deref()),
        Command::Compare { runs_args, baseline, baselines, force, format, threshold, runs } => {
            let format = match format {
                FormatArg::Table => cmd::compare::Format::Table,
                FormatArg::Json => cmd::compare::Format::Json,
                FormatArg::Bmf => cmd::compare::Format::Bmf,
            };
            let opts = cmd::compare::Options { format, threshold, force };
            match (baseline.as_deref(), runs_args.as_slice()) {
                (None, [base, new]) => cmd::compare::compare(cmd::compare::BaseSpec::Run(base), new, &runs, opts),
                (Some(name), [new]) => {
                    cmd::compare::compare(cmd::compare::BaseSpec::Baseline { root: &baselines, name }, new, &runs, opts)
                }
                (None, _) => Err(UsageError("compare takes BASE NEW, or NEW alone with --baseline NAME".into()).into()),
                (Some(_), _) => Err(UsageError(
                    "with --baseline, compare takes NEW alone: the base is the baseline of NEW's machine class".into(),
                )
                .into()),
            }
        }
        Command::Baseline { action } => match action {
            BaselineCmd::Update { run, name, baselines, runs } => cmd::baseline::update(&run, &name, &runs, &baselines),
            BaselineCmd::Spread { run_list, name, baselines, runs } => {
                cmd::baseline::spread(&run_list, &name, &runs, &baselines)
            }
        },
        Command::History { probe, params, method, since, db, rebuild, json, runs, baselines } => {
            cmd::history::history(cmd::history::HistoryArgs {
                probe: probe.as_deref(),
                params: params.as_deref(),
                method: method.as_deref(),
                since: since.as_deref(),
                db: &db,
                runs: &runs,
                baselines: &baselines,
                rebuild,
                json,
            })
        }
        Command::Publish { run_list, out, runs, baselines, db } => {
            cmd::publish::publish(&run_list, &out, &runs, &baselines, &db)
        }
        Command::Gate { new, baseline, baselines, remeasure, threshold, runs } => {
            cmd::gate::gate(cmd::gate::GateArgs {
                new: &new,
                runs_root: &runs,
                baselines: &baselines,
                name: &baseline,
                threshold,
                remeasure,
            })
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
