//! Sweep configuration: the embedded default (`default-sweep.toml`) or a user's file that
//! replaces it. Errors name the file, line and column.

use std::path::Path;

use probe_api::{Budget, Method, Point, Probe};
use serde::Deserialize;

use crate::registry;

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
    // Spelled out rather than a flattened `Settings`: serde's flatten loses the toml
    // spans, and errors must point at the offending line.
    pub iterations: Option<u64>,
    pub quick_iterations: Option<u64>,
    pub methods: Option<Vec<MethodName>>,
    pub batch: Option<u32>,
    pub cpus: Option<Vec<usize>>,
    pub timeout_s: Option<u64>,
}

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
    #[error("cannot read config {file}: {source}")]
    Io { file: String, source: std::io::Error },
}

/// One unit of work of a sweep: a probe, a point, and how to time it.
pub struct Job<'a> {
    pub probe: &'a dyn Probe,
    pub point: Point,
    pub budget: Budget,
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
            if s.iterations.unwrap_or(1) == 0 || s.quick_iterations.unwrap_or(1) == 0 {
                return Err(invalid(format!("probe entry {} (`{}`): iterations must be at least 1", i + 1, e.name)));
            }
            if s.batch == Some(0) {
                return Err(invalid(format!("probe entry {} (`{}`): batch must be at least 1", i + 1, e.name)));
            }
            if s.methods.as_ref().is_some_and(|m| m.is_empty()) {
                return Err(invalid(format!("probe entry {} (`{}`): methods is empty", i + 1, e.name)));
            }
            for p in e.params.iter().flatten() {
                Point::parse(p).map_err(|m| invalid(format!("probe entry {} (`{}`): {m}", i + 1, e.name)))?;
            }
        }
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<SweepConfig, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { file: file.clone(), source })?;
        Self::parse(&text, &file)
    }

    pub fn default_sweep() -> SweepConfig {
        Self::parse(DEFAULT_SWEEP, "<default sweep>").expect("the embedded default sweep parses")
    }

    /// Expands entries into jobs, in file order; a probe named twice runs twice.
    pub fn jobs<'a>(&self, probes: &'a [Box<dyn Probe>], quick: bool, file: &str) -> Result<Vec<Job<'a>>, ConfigError> {
        let mut jobs = Vec::new();
        for e in &self.probes {
            let selected = registry::select(probes, &e.name);
            if selected.is_empty() {
                let near = registry::closest(probes, &e.name, 3).join(", ");
                return Err(ConfigError::Invalid { file: file.into(), message: format!("unknown probe `{}`; closest: {near}", e.name) });
            }
            let s = self.defaults.merged(&e.settings());
            for probe in selected {
                let points = match &e.params {
                    Some(list) => list.iter().map(|p| Point::parse(p).expect("validated in parse")).collect(),
                    None => probe.points(),
                };
                for point in points {
                    for m in s.methods.clone().unwrap_or_else(|| vec![MethodName::PerOp]) {
                        let method = match m {
                            MethodName::PerOp => Method::PerOp,
                            MethodName::Batched => Method::Batched { batch: s.batch.unwrap_or(100) },
                        };
                        let iterations = if quick { s.quick_iterations.or(s.iterations) } else { s.iterations }.unwrap_or(10_000);
                        let budget = Budget {
                            iterations,
                            duration: None,
                            cpus: s.cpus.clone().unwrap_or_else(|| vec![0, 1]),
                            method,
                            timeout: std::time::Duration::from_secs(s.timeout_s.unwrap_or(120)),
                        };
                        jobs.push(Job { probe, point: point.clone(), budget });
                    }
                }
            }
        }
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
        assert!(e.to_string().contains("at least 1"), "{e}");
        let e = SweepConfig::parse("[defaults]\nmethods=['sideways']\n", "c.toml").unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { line: 2, .. }), "{e}");
        let e = SweepConfig::parse("[defaults]\n[[probe]]\nname='x'\nparams=['nokey']\n", "c.toml").unwrap_err();
        assert!(e.to_string().contains("key=value"), "{e}");
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
