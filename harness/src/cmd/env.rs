//! `ivbench env`: the environment fingerprint recorded with every run.

use crate::fingerprint;

pub fn env(json: bool, cpus: &[usize]) -> anyhow::Result<u8> {
    let fp = fingerprint::collect(cpus);
    // The guest backend check boots a tiny VM: it tells whether VM figures from this host
    // would come from native guest execution.
    let backend = guest_probes::backend_report();
    if json {
        let mut v = serde_json::to_value(&fp)?;
        v["guest_backend"] = super::execute::backend_json(&backend);
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        out!("{}", fp.to_text());
        outln!("\n[guest backend]\n{backend}");
    }
    Ok(0)
}
