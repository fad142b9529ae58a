//! The probe table: every probe of every crate, found by its dotted name.

use probe_api::Probe;

/// All probes, host first, in the order `ivbench list` shows them.
pub fn all() -> Vec<Box<dyn Probe>> {
    let mut v = host_probes::probes();
    v.extend(guest_probes::probes());
    v
}

/// Selects probes by exact name, by a trailing-`*` pattern (`vm.exit.*`), or by a
/// dotted prefix (`vm.exit` selects `vm.exit.pio`, `vm.exit.mmio`, ...).
pub fn select<'a>(probes: &'a [Box<dyn Probe>], pattern: &str) -> Vec<&'a dyn Probe> {
    if let Some(p) = probes.iter().find(|p| p.name() == pattern) {
        return vec![p.as_ref()];
    }
    let prefix = pattern.strip_suffix('*').unwrap_or(pattern).trim_end_matches('.');
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
#[error("unknown probe `{wanted}`; closest: {}", closest.join(", "))]
pub struct UnknownProbe {
    pub wanted: String,
    pub closest: Vec<&'static str>,
}

/// Resolves each pattern, failing on the first one that selects nothing.
pub fn resolve<'a>(probes: &'a [Box<dyn Probe>], patterns: &[String]) -> Result<Vec<&'a dyn Probe>, UnknownProbe> {
    let mut out: Vec<&dyn Probe> = Vec::new();
    for pat in patterns {
        let sel = select(probes, pat);
        if sel.is_empty() {
            return Err(UnknownProbe { wanted: pat.clone(), closest: closest(probes, pat, 3) });
        }
        for p in sel {
            if !out.iter().any(|q| q.name() == p.name()) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            assert!(["host", "vm", "path"].contains(&p.name().split('.').next().unwrap()), "{}: unknown domain", p.name());
            assert!(!p.description().is_empty());
            assert!(!p.points().is_empty(), "{} has no point", p.name());
        }
    }
}
