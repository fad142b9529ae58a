//! Runs every host probe once and prints raw and overhead-subtracted percentiles in
//! cycles, for a quick look without the harness:
//! `cargo run --release -p host-probes --example summary -- [iterations] [name-filter]`

use probe_api::{Budget, Method, Methods};

fn pct(sorted: &[u64], q: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let iterations = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let filter = args.get(2).cloned().unwrap_or_default();
    println!("perf: {}", host_probes::perf_availability());
    for probe in host_probes::probes() {
        if !probe.name().contains(&filter) {
            continue;
        }
        if let probe_api::Support::Unsupported(why) = probe.support() {
            println!("{}: unsupported: {why}", probe.name());
            continue;
        }
        let mut methods = vec![Method::PerOp];
        if probe.methods() == Methods::Both {
            methods.push(Method::Batched { batch: 64 });
        }
        for point in probe.points() {
            for &method in &methods {
                let mut b = Budget::quick(iterations);
                b.method = method;
                match probe.run(&point, &b) {
                    Ok(s) => {
                        let mut v = s.cycles.clone();
                        v.sort_unstable();
                        let net = s.overhead_cycles / u64::from(method.batch());
                        let mean = v.iter().sum::<u64>() as f64 / v.len() as f64;
                        println!(
                            "{} [{point}] {}: n={} raw p50={} p99={} mean={:.1} | net p50={} p99={} (overhead {} per pair)",
                            probe.name(),
                            method.label(),
                            v.len(),
                            pct(&v, 0.5),
                            pct(&v, 0.99),
                            mean,
                            pct(&v, 0.5).saturating_sub(net),
                            pct(&v, 0.99).saturating_sub(net),
                            s.overhead_cycles
                        );
                        for m in &s.metrics {
                            println!("    metric {} = {:.3} {}", m.name, m.value, m.unit);
                        }
                        for n in &s.notes {
                            println!("    note: {n}");
                        }
                    }
                    Err(e) => println!("{} [{point}] {}: {e}", probe.name(), method.label()),
                }
            }
        }
    }
}
