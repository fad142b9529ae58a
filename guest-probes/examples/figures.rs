//! Runs every VM probe once and prints median / p99 cycles (raw, timer cost included, as
//! the probes return them; the harness subtracts `overhead_cycles`).
//!
//! `cargo run --release -p guest-probes --example figures -- [iterations] [per-op|batched/N] [probe-prefix]`
//! (env CPU=n pins the vCPU thread to CPU n, default 0)

use std::time::{Duration, Instant};

use probe_api::{Budget, Method, Point};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let method = match args.get(2).map(String::as_str) {
        Some(m) if m.starts_with("batched/") => Method::Batched { batch: m[8..].parse().expect("batched/N") },
        _ => Method::PerOp,
    };
    let filter = args.get(3).cloned().unwrap_or_default();
    let cpu: usize = std::env::var("CPU").ok().and_then(|c| c.parse().ok()).unwrap_or(0);
    println!("{}", guest_probes::backend_report());
    for p in guest_probes::probes().into_iter().filter(|p| p.name().starts_with(&filter)) {
        let budget = Budget {
            iterations: n,
            duration: None,
            cpus: vec![cpu],
            method,
            timeout: Duration::from_secs(300),
            stop: Default::default(),
        };
        let t0 = Instant::now();
        match p.run(&Point::none(), &budget) {
            Ok(s) => {
                let mut c = s.cycles.clone();
                c.sort_unstable();
                let q = |f: f64| c[((c.len() as f64 - 1.0) * f) as usize];
                println!(
                    "{:<22} {:<14} n={:<7} median {:>8} p99 {:>8} min {:>7} overhead {:>3} cycles  ({:.1} s){}",
                    p.name(),
                    s.method.label(),
                    c.len(),
                    q(0.5),
                    q(0.99),
                    c[0],
                    s.overhead_cycles,
                    t0.elapsed().as_secs_f64(),
                    s.metrics
                        .iter()
                        .filter(|m| m.name.starts_with("cycles_per_iteration"))
                        .map(|m| format!("  {} {:.3}", m.name, m.value))
                        .collect::<String>()
                );
            }
            Err(e) => println!("{:<22} {e}", p.name()),
        }
    }
}
