//! The probe table: every probe of every crate, found by its dotted name.

use probe_api::{Point, Probe};

/// All probes, host first, in the order `ivbench list` shows them.
pub fn all() -> Vec<Box<dyn Probe>> {
    let mut v = host_probes::probes();
    v.extend(guest_probes::probes());
    v
}

/// Refuses a pattern that names nothing yet would select everything: `''` (an unset
/// shell variable), `.`, `.*`. Every probe is selected only when asked for with `*`.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    let prefix = pattern.trim().strip_suffix('*').unwrap_or(pattern.trim()).trim_end_matches('.');
    if prefix.is_empty() && pattern.trim() != "*" {
        return Err(format!(
            "probe pattern `{pattern}` names no probe (an unset shell variable?); give a name, a prefix such as `vm.exit`, or `*` for every probe"
        ));
    }
    Ok(())
}

/// Selects probes by exact name, by a trailing-`*` pattern (`vm.exit.*`), or by a
/// dotted prefix (`vm.exit` selects `vm.exit.pio`, `vm.exit.mmio`, ...). `*` alone
/// selects every probe; a pattern [`check_pattern`] refuses selects none.
pub fn select<'a>(probes: &'a [Box<dyn Probe>], pattern: &str) -> Vec<&'a dyn Probe> {
    if let Some(p) = probes.iter().find(|p| p.name() == pattern) {
        return vec![p.as_ref()];
    }
    if check_pattern(pattern).is_err() {
        return Vec::new();
    }
    let prefix = pattern.trim().strip_suffix('*').unwrap_or(pattern.trim()).trim_end_matches('.');
    if prefix.is_empty() {
        return probes.iter().map(|p| p.as_ref()).collect();
    }
    probes
        .iter()
        .filter(|p| p.name() == prefix || p.name().starts_with(&format!("{prefix}.")))
        .map(|p| p.as_ref())
        .collect()
}

/// The known names closest to a mistyped one, best first.
pub fn closest(probes: &[Box<dyn Probe>], wanted: &str, n: usize) -> Vec<&'static str> {
    let mut scored: Vec<(f64, &'static str)> = probes
        .iter()
        .map(|p| {
            let name = p.name();
            let mut score = strsim::jaro_winkler(wanted, name);
            if name.contains(wanted) || wanted.contains(name) {
                score += 0.5;
            }
            (score, name)
        })
        .collect();
    scored.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
    scored.into_iter().take(n).map(|(_, name)| name).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("unknown probe `{wanted}`; closest: {}", closest.join(", "))]
    Unknown { wanted: String, closest: Vec<&'static str> },
    #[error("{0}")]
    Empty(String),
}

/// Resolves each pattern, failing on the first one that selects nothing.
pub fn resolve<'a>(probes: &'a [Box<dyn Probe>], patterns: &[String]) -> Result<Vec<&'a dyn Probe>, SelectError> {
    let mut out: Vec<&dyn Probe> = Vec::new();
    for pat in patterns {
        check_pattern(pat).map_err(SelectError::Empty)?;
        let sel = select(probes, pat);
        if sel.is_empty() {
            return Err(SelectError::Unknown { wanted: pat.clone(), closest: closest(probes, pat, 3) });
        }
        for p in sel {
            if !out.iter().any(|q| q.name() == p.name()) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// Refuses a point with a key the probe does not read: it would be recorded in the row as
/// if it had been applied.
pub fn check_point(probe: &dyn Probe, point: &Point) -> Result<(), String> {
    let keys = probe.param_keys();
    for k in point.0.keys() {
        if !keys.iter().any(|d| d == k) {
            let takes = if keys.is_empty() {
                "it takes no parameters".to_string()
            } else {
                format!("it takes: {}", keys.join(", "))
            };
            return Err(format!("{} has no parameter `{k}`; {takes}", probe.name()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_patterns_select_nothing_and_are_refused() {
        let all = all();
        for bad in ["", " ", ".", "..", ".*"] {
            assert!(check_pattern(bad).is_err(), "{bad:?}");
            assert!(select(&all, bad).is_empty(), "{bad:?}");
            assert!(matches!(resolve(&all, &[bad.to_string()]), Err(SelectError::Empty(_))), "{bad:?}");
        }
        assert_eq!(select(&all, "*").len(), all.len());
        assert!(select(&all, "host").len() >= 5);
    }

    #[test]
    fn undeclared_parameter_keys_are_refused() {
        let all = all();
        let memcpy = select(&all, "host.memcpy")[0];
        assert!(check_point(memcpy, &Point::parse("size=64").unwrap()).is_ok());
        let e = check_point(memcpy, &Point::parse("sizee=64").unwrap()).unwrap_err();
        assert!(e.contains("no parameter `sizee`") && e.contains("takes: size"), "{e}");
        let getppid = select(&all, "host.syscall.getppid")[0];
        assert!(check_point(getppid, &Point::parse("size=64").unwrap()).unwrap_err().contains("takes no parameters"));
    }

    #[test]
    fn names_are_unique_dotted_and_described() {
        let all = all();
        let mut names: Vec<_> = all.iter().map(|p| p.name()).collect();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len(), "duplicate probe names");
        for p in &all {
            assert!(p.name().split('.').count() >= 2, "{} is not a dotted name", p.name());
            assert!(
                ["host", "vm", "path"].contains(&p.name().split('.').next().unwrap()),
                "{}: unknown domain",
                p.name()
            );
            assert!(!p.description().is_empty());
            assert!(!p.points().is_empty(), "{} has no point", p.name());
        }
    }
}
