//! `ivbench env`: the environment fingerprint recorded with every run.

use crate::fingerprint;

pub fn env(json: bool, cpus: &[usize]) -> anyhow::Result<u8> {
    let fp = fingerprint::collect(cpus);
    if json {
        println!("{}", serde_json::to_string_pretty(&fp)?);
    } else {
        print!("{}", fp.to_text());
    }
    Ok(0)
}
