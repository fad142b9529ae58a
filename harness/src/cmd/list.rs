//! `ivbench list`: every probe, grouped, with whether this host can run it and why not.

use std::collections::BTreeMap;

use probe_api::Methods;

use crate::registry;

pub fn list(json: bool) -> anyhow::Result<u8> {
    let probes = registry::all();
    if json {
        let v: Vec<_> = probes
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name(), "group": p.group(), "description": p.description(),
                    "support": p.support().to_string(),
                    "methods": match p.methods() { Methods::PerOpOnly => vec!["per-op"], Methods::Both => vec!["per-op", "batched"] },
                    "points": p.points().iter().map(|x| x.to_string()).collect::<Vec<_>>(),
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let mut groups: BTreeMap<(String, String), Vec<_>> = BTreeMap::new();
    for p in &probes {
        let domain = p.name().split('.').next().unwrap_or("").to_string();
        groups.entry((domain, p.group().to_string())).or_default().push(p);
    }
    for ((domain, group), ps) in groups {
        outln!("{domain} / {group}");
        for p in ps {
            let methods = if p.methods() == Methods::Both { "per-op|batched" } else { "per-op" };
            outln!("  {:<28} {:<15} {}", p.name(), methods, p.support());
            outln!("  {:<28} {}", "", p.description());
        }
    }
    Ok(0)
}
