//! Sweep configuration: the embedded default (`default-sweep.toml`) or a user's file that
//! replaces it. Errors name the file, line and column.

use std::path::Path;

use probe_api::{cpu, limits, Budget, Method, Point, Probe, StopFlag};
use serde::Deserialize;

use crate::registry;
use crate::store::read::{read_text_bounded, MAX_CONFIG_BYTES};

pub const DEFAULT_SWEEP: &str = include_str!("../default-sweep.toml");

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    pub defaults: Settings,
    #[serde(rename = "probe", default)]
    pub probes: Vec<Entry>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub iterations: Option<u64>,
    pub quick_iterations: Option<u64>,
    pub methods: Option<Vec<MethodName>>,
    pub batch: Option<u32>,
    pub cpus: Option<Vec<usize>>,
    pub timeout_s: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MethodName {
    PerOp,
    Batched,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub name: String,
    #[serde(default)]
    pub params: Option<Vec<String>>,
    /// The points under --quick instead of `params` (a baseline that takes seconds per
    /// point keeps one point there).
    #[serde(default)]
    pub quick_params: Option<Vec<String>>,
    // Spelled out rather than a flattened `Settings`: serde's flatten loses the toml
    // spans, and errors must point at the offending line.
    pub iterations: Option<u64>,
    pub quick_iterations: Option<u64>,
    pub methods: Option<Vec<MethodName>>,
    pub batch: Option<u32>,
    pub cpus: Option<Vec<usize>>,
    pub timeout_s: Option<u64>,
    /// Search each point's offered rate for NDR and PDR instead of running it once
    /// (probes with a `rate` parameter): full trials of NDR_FULL_TRIAL (quick: QUICK_NDR_FULL_TRIAL).
    #[serde(default)]
    pub ndr: bool,
}

/// Full trial length of a sweep's zero-loss search, and under --quick.
pub const NDR_FULL_TRIAL: std::time::Duration = std::time::Duration::from_secs(1);
pub const QUICK_NDR_FULL_TRIAL: std::time::Duration = std::time::Duration::from_millis(200);

impl Entry {
    fn settings(&self) -> Settings {
        Settings {
            iterations: self.iterations,
            quick_iterations: self.quick_iterations,
            methods: self.methods.clone(),
            batch: self.batch,
            cpus: self.cpus.clone(),
            timeout_s: self.timeout_s,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}:{line}:{column}: {message}")]
    Syntax { file: String, line: usize, column: usize, message: String },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("cannot read config: {0}")]
    Read(#[from] crate::store::read::ReadError),
}

/// One unit of work of a sweep: a probe, a point, and how to time it.
pub struct Job<'a> {
    pub probe: &'a dyn Probe,
    pub point: Point,
    pub budget: Budget,
    /// Tells this job's row apart from another of the same probe, point and method
    /// (see `SummaryRow::variant`); empty when there is no other.
    pub variant: String,
    /// Run the zero-loss search (NDR/PDR) over the point's `rate` with these trial
    /// lengths instead of the point once.
    pub ndr: Option<crate::ndr::Durations>,
}

/// Every CPU must be one this process may run on: pinning to any other fails at the
/// first point, after the run directory was made.
pub fn check_cpus_available(cpus: &[usize]) -> Result<(), String> {
    let allowed = cpu::allowed_cpus();
    for &c in cpus {
        limits::cpu(c)?;
        if !allowed.is_empty() && !allowed.contains(&c) {
            let list: Vec<String> = allowed.iter().map(|c| c.to_string()).collect();
            return Err(format!("cpu {c} is not available to this process (it may run on CPUs {})", list.join(",")));
        }
    }
    Ok(())
}

/// Gives every job that shares probe, point and method with another a variant that tells
/// them apart: their CPUs when those differ, else their sweep entry number.
pub fn assign_variants(jobs: &mut [Job<'_>], entries: &[usize]) {
    let key = |j: &Job<'_>| (j.probe.name(), j.point.clone(), j.budget.method.label());
    for i in 0..jobs.len() {
        let same: Vec<usize> = (0..jobs.len()).filter(|&k| key(&jobs[k]) == key(&jobs[i])).collect();
        if same.len() < 2 {
            continue;
        }
        let cpus = |k: usize| jobs[k].budget.cpus.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("+");
        let cpus_unique = same.iter().all(|&a| same.iter().filter(|&&b| cpus(b) == cpus(a)).count() == 1);
        jobs[i].variant = if cpus_unique { format!("cpus={}", cpus(i)) } else { format!("entry={}", entries[i] + 1) };
    }
}

impl SweepConfig {
    pub fn parse(text: &str, file: &str) -> Result<SweepConfig, ConfigError> {
        let cfg: SweepConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ConfigError::Syntax { file: file.into(), line, column, message: e.message().to_string() }
        })?;
        let invalid = |message: String| ConfigError::Invalid { file: file.into(), message };
        for (i, e) in cfg.probes.iter().enumerate() {
            let s = cfg.defaults.merged(&e.settings());
            let at = |m: String| invalid(format!("probe entry {} (`{}`): {m}", i + 1, e.name));
            registry::check_pattern(&e.name).map_err(at)?;
            for n in [s.iterations, s.quick_iterations].into_iter().flatten() {
                limits::iterations(n).map_err(at)?;
            }
            if let Some(b) = s.batch {
                limits::batch(u64::from(b)).map_err(at)?;
            }
            if let Some(t) = s.timeout_s {
                limits::timeout_s(t).map_err(at)?;
            }
            for &c in s.cpus.iter().flatten() {
                limits::cpu(c).map_err(at)?;
            }
            if s.cpus.as_ref().is_some_and(|c| c.is_empty()) {
                return Err(at("cpus is empty".into()));
            }
            if s.methods.as_ref().is_some_and(|m| m.is_empty()) {
                return Err(invalid(format!("probe entry {} (`{}`): methods is empty", i + 1, e.name)));
            }
            for p in e.params.iter().chain(e.quick_params.iter()).flatten() {
                Point::parse(p).map_err(|m| invalid(format!("probe entry {} (`{}`): {m}", i + 1, e.name)))?;
            }
        }
        Ok(cfg)
    }

    /// Reads (at most [`MAX_CONFIG_BYTES`]: `--config /dev/zero` ends at once) and parses
    /// a config file; also returns its text, which the manifest keeps.
    pub fn load(path: &Path) -> Result<(SweepConfig, String), ConfigError> {
        let file = path.display().to_string();
        let text = read_text_bounded(path, MAX_CONFIG_BYTES)?;
        Ok((Self::parse(&text, &file)?, text))
    }

    pub fn default_sweep() -> SweepConfig {
        Self::parse(DEFAULT_SWEEP, "<default sweep>").expect("the embedded default sweep parses")
    }

    /// Expands entries into jobs, in file order; a probe named twice runs twice, each row
    /// told apart by its variant.
    pub fn jobs<'a>(&self, probes: &'a [Box<dyn Probe>], quick: bool, file: &str) -> Result<Vec<Job<'a>>, ConfigError> {
        let mut jobs = Vec::new();
        let mut entries = Vec::new();
        for (entry, e) in self.probes.iter().enumerate() {
            let selected = registry::select(probes, &e.name);
            if selected.is_empty() {
                let near = registry::closest(probes, &e.name, 3).join(", ");
                return Err(ConfigError::Invalid {
                    file: file.into(),
                    message: format!("unknown probe `{}`; closest: {near}", e.name),
                });
            }
            let s = self.defaults.merged(&e.settings());
            for probe in selected {
                let params = if quick { e.quick_params.as_ref().or(e.params.as_ref()) } else { e.params.as_ref() };
                let points: Vec<Point> = match params {
                    Some(list) => list.iter().map(|p| Point::parse(p).expect("validated in parse")).collect(),
                    None => probe.points(),
                };
                for p in &points {
                    registry::check_point(probe, p).map_err(|m| ConfigError::Invalid {
                        file: file.into(),
                        message: format!("probe entry {} (`{}`): {m}", entry + 1, e.name),
                    })?;
                }
                let cpus = s.cpus.clone().unwrap_or_else(|| vec![0, 1]);
                check_cpus_available(&cpus).map_err(|m| ConfigError::Invalid {
                    file: file.into(),
                    message: format!("probe entry {} (`{}`): {m}", entry + 1, e.name),
                })?;
                for point in points {
                    for m in s.methods.clone().unwrap_or_else(|| vec![MethodName::PerOp]) {
                        let method = match m {
                            MethodName::PerOp => Method::PerOp,
                            MethodName::Batched => Method::Batched { batch: s.batch.unwrap_or(100) },
                        };
                        let iterations =
                            if quick { s.quick_iterations.or(s.iterations) } else { s.iterations }.unwrap_or(10_000);
                        let budget = Budget {
                            iterations,
                            duration: None,
                            cpus: cpus.clone(),
                            method,
                            timeout: std::time::Duration::from_secs(s.timeout_s.unwrap_or(120)),
                            stop: StopFlag::new(),
                        };
                        let ndr = e.ndr.then(|| {
                            crate::ndr::Durations::from_full(if quick { QUICK_NDR_FULL_TRIAL } else { NDR_FULL_TRIAL })
                        });
                        jobs.push(Job { probe, point: point.clone(), budget, variant: String::new(), ndr });
                        entries.push(entry);
                    }
                }
            }
        }
        assign_variants(&mut jobs, &entries);
        Ok(jobs)
    }
}

impl Settings {
    fn merged(&self, over: &Settings) -> Settings {
        Settings {
            iterations: over.iterations.or(self.iterations),
            quick_iterations: over.quick_iterations.or(self.quick_iterations),
            methods: over.methods.clone().or_else(|| self.methods.clone()),
            batch: over.batch.or(self.batch),
            cpus: over.cpus.clone().or_else(|| self.cpus.clone()),
            timeout_s: over.timeout_s.or(self.timeout_s),
        }
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_sweep_parses_and_names_only_known_probes() {
        let cfg = SweepConfig::default_sweep();
        let probes = registry::all();
        // vm.* may select nothing while no guest probe is registered; every host entry must resolve.
        for e in cfg.probes.iter().filter(|e| e.name.starts_with("host.")) {
            assert!(!registry::select(&probes, &e.name).is_empty(), "{} selects nothing", e.name);
        }
    }

    #[test]
    fn syntax_error_names_file_line_and_column() {
        let text = "[defaults]\niterations = 10\n\n[[probe]]\nname = = \"host.memcpy\"\n";
        let e = SweepConfig::parse(text, "my.toml").unwrap_err();
        match &e {
            ConfigError::Syntax { file, line, .. } => {
                assert_eq!(file, "my.toml");
                assert_eq!(*line, 5, "{e}");
            }
            other => panic!("wrong error {other}"),
        }
        assert!(e.to_string().starts_with("my.toml:5:"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        let e = SweepConfig::parse("[defaults]\niteratoins = 5\n", "c.toml").unwrap_err();
        assert!(e.to_string().contains("c.toml:2:"), "{e}");
        let e = SweepConfig::parse("[defaults]\n[[probe]]\nname='x'\niterations=0\n", "c.toml").unwrap_err();
        assert!(e.to_string().contains("iterations must be 1..="), "{e}");
        let e = SweepConfig::parse("[defaults]\nmethods=['sideways']\n", "c.toml").unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { line: 2, .. }), "{e}");
        let e = SweepConfig::parse("[defaults]\n[[probe]]\nname='x'\nparams=['nokey']\n", "c.toml").unwrap_err();
        assert!(e.to_string().contains("key=value"), "{e}");
    }

    #[test]
    fn numbers_out_of_range_are_refused_naming_the_entry() {
        for (line, why) in [
            ("iterations = 18446744073709551615", "iterations must be 1..="),
            ("quick_iterations = 1000000000000", "iterations must be 1..="),
            ("batch = 4000000000", "batch must be 1..="),
            ("timeout_s = 18446744073709551615", "timeout must be 1..="),
            ("timeout_s = 0", "timeout must be 1..="),
            ("cpus = [99999]", "beyond the affinity mask"),
            ("cpus = []", "cpus is empty"),
        ] {
            let text = format!("[defaults]\n[[probe]]\nname = 'host.memcpy'\n{line}\n");
            let e = SweepConfig::parse(&text, "c.toml").unwrap_err().to_string();
            assert!(e.contains("c.toml") && e.contains("probe entry 1") && e.contains(why), "{line}: {e}");
        }
        let e = SweepConfig::parse("[defaults]\n[[probe]]\nname = ''\n", "c.toml").unwrap_err().to_string();
        assert!(e.contains("names no probe"), "{e}");
    }

    #[test]
    fn a_probe_listed_twice_gets_rows_told_apart() {
        let probes = registry::all();
        let text = "[defaults]\n[[probe]]\nname = 'host.syscall.getppid'\ncpus = [0]\n[[probe]]\nname = 'host.syscall.getppid'\ncpus = [1]\n\
                    [[probe]]\nname = 'host.syscall.getppid'\ncpus = [1]\n[[probe]]\nname = 'host.memcpy'\nparams = ['size=64']\n";
        let cfg = SweepConfig::parse(text, "c.toml").unwrap();
        let jobs = cfg.jobs(&probes, true, "c.toml").unwrap();
        let variants: Vec<&str> = jobs.iter().map(|j| j.variant.as_str()).collect();
        assert_eq!(variants, vec!["entry=1", "entry=2", "entry=3", ""]);
        let text = "[defaults]\n[[probe]]\nname = 'host.syscall.getppid'\ncpus = [0]\n[[probe]]\nname = 'host.syscall.getppid'\ncpus = [1]\n";
        let jobs = SweepConfig::parse(text, "c.toml").unwrap().jobs(&probes, true, "c.toml").unwrap();
        assert_eq!(jobs.iter().map(|j| j.variant.as_str()).collect::<Vec<_>>(), vec!["cpus=0", "cpus=1"]);
    }

    #[test]
    fn undeclared_params_in_a_config_are_refused() {
        let probes = registry::all();
        let text = "[defaults]\n[[probe]]\nname = 'host.memcpy'\nparams = ['size=64', 'sise=128']\n";
        let e = SweepConfig::parse(text, "c.toml")
            .unwrap()
            .jobs(&probes, true, "c.toml")
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("no parameter `sise`"), "{e}");
    }

    #[test]
    fn an_endless_config_file_is_refused() {
        let e = SweepConfig::load(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("/dev/zero") && e.contains("larger than"), "{e}");
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
