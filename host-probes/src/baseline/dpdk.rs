//! `path.dpdk-vhost` and `path.dpdk-memif`: DPDK's own process-to-process paths, run as
//! two supervised `dpdk-testpmd` processes on the budget's two CPUs: a receiver (rxonly;
//! vhost-user backend or memif server) started first, then a sender (txonly; virtio-user
//! or memif client). Each forwards on one lcore: the sender's on the first CPU, the
//! receiver's on the second (the main lcores, which only print statistics, sit on the
//! other CPU). Both get a hugetlbfs mount and a socket directory of their own.
//!
//! Figures: testpmd prints the receiver's Rx-pps once a second (`--stats-period 1`);
//! after the first second with packets the probe keeps `seconds` samples (`--duration`,
//! else `iterations` / 5M rounded up, 2..=60), stops the sender (its exit statistics give
//! TX-total, the packets it offered, and TX-dropped, those the path refused), waits, then
//! stops the receiver (RX-packets). `dropped = sent - received`; the row's duration runs
//! from the first second with packets to the sender's stop.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use probe_api::{Budget, Metric, Point, Probe, ProbeError, Samples, Support, Throughput};

use super::supervise::{find_tool, missing_tool, sweep_stale, HugeMount, ScratchDir, Supervised};
use crate::pinning::{cpu_pair, two_cpus_support};

const TESTPMD: &str = "dpdk-testpmd";
/// Debian 12 ships dpdk-testpmd in dpdk-dev (the `dpdk` package has only the scripts);
/// the drivers the two paths load come separately.
const PACKAGE: &str = "dpdk-dev";
const DRIVERS: &str = "librte-net-vhost23 librte-net-virtio23 librte-net-memif23 librte-mempool-ring23";
/// Memory per process, MB, and the 2 MiB hugepages both need with some slack.
const MEM_MB: u64 = 256;
const HUGEPAGES: u64 = 2 * MEM_MB / 2 + 64;
/// How long a link may take to carry packets (memif needs ~6 s on these machines).
const LINK_TIMEOUT: Duration = Duration::from_secs(20);

/// One DPDK trial at a time in this process: two would share the hugepage reservation
/// (and the CPUs).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Vhost,
    Memif,
}

pub struct Dpdk(pub Kind);

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Vhost => "path.dpdk-vhost",
            Kind::Memif => "path.dpdk-memif",
        }
    }
    /// The receiver's and the sender's --vdev.
    fn vdevs(self, sock: &str) -> (String, String) {
        match self {
            Kind::Vhost => {
                (format!("net_vhost0,iface={sock},queues=1"), format!("net_virtio_user0,path={sock},queues=1"))
            }
            Kind::Memif => (
                format!("net_memif0,role=server,socket={sock},socket-abstract=no"),
                format!("net_memif0,role=client,socket={sock},socket-abstract=no"),
            ),
        }
    }
}

fn support() -> Result<PathBuf, String> {
    let t = find_tool(TESTPMD).ok_or_else(|| format!("{} {DRIVERS}", missing_tool(TESTPMD, PACKAGE)))?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("dpdk-testpmd needs root here (a hugetlbfs mount of its own)".into());
    }
    Ok(t)
}

/// The number after `key` in a testpmd statistics line.
pub fn field(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// The last value of `key` in a log.
fn last(log: &[String], key: &str) -> Option<u64> {
    log.iter().rev().find_map(|l| field(l, key))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        0.0
    } else {
        s[s.len() / 2]
    }
}

fn testpmd(tool: &PathBuf, lcores: &str, huge: &HugeMount, prefix: &str, vdev: &str, mode: &str, size: u16) -> Command {
    let mut c = Command::new(tool);
    c.args(["--lcores", lcores, "--main-lcore", "0", "--no-pci", "--single-file-segments"]);
    c.arg("--huge-dir").arg(&huge.dir);
    c.args(["-m", &MEM_MB.to_string(), "--file-prefix", prefix, "--vdev", vdev, "--"]);
    c.args([
        &format!("--forward-mode={mode}"),
        "--nb-cores=1",
        "--stats-period",
        "1",
        "--total-num-mbufs=16384",
        &format!("--txpkts={size}"),
    ]);
    c
}

impl Probe for Dpdk {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn description(&self) -> &'static str {
        match self.0 {
            Kind::Vhost => {
                "dpdk-testpmd virtio-user (txonly) -> vhost-user (rxonly), one forwarding core each (Mpps, loss)"
            }
            Kind::Memif => {
                "dpdk-testpmd memif client (txonly) -> memif server (rxonly), one forwarding core each (Mpps, loss)"
            }
        }
    }
    fn group(&self) -> &'static str {
        "path"
    }
    fn support(&self) -> Support {
        match support() {
            Err(why) => Support::Unsupported(why),
            Ok(_) => two_cpus_support(self.0.name()),
        }
    }
    fn points(&self) -> Vec<Point> {
        ["64", "1518"].iter().map(|s| Point::none().with("size", s)).collect()
    }
    fn run(&self, point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
        let name = self.0.name();
        let size_text = point.get("size").unwrap_or("64");
        let size = match packet_ring::FrameSize::parse(size_text).map_err(ProbeError::Failed)? {
            packet_ring::FrameSize::Fixed(n) => n,
            packet_ring::FrameSize::Imix => {
                return Err(ProbeError::Unsupported("testpmd txonly sends one frame length; no imix".into()))
            }
        };
        let tool = support().map_err(ProbeError::Unsupported)?;
        let (tx_cpu, rx_cpu) = cpu_pair(budget, name)?;
        let seconds = match budget.duration {
            Some(d) => d.as_secs_f64().ceil() as usize,
            None => budget.iterations.div_ceil(5_000_000) as usize,
        }
        .clamp(2, 60);
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let started = Instant::now();
        sweep_stale(None);
        let huge = HugeMount::new(HUGEPAGES)?;
        let dir = ScratchDir::new("dpdk")?;
        let sock = dir.0.join("sock").to_string_lossy().to_string();
        let (rx_vdev, tx_vdev) = self.0.vdevs(&sock);
        let tag = format!("ivbench-{}-{}", std::process::id(), started.elapsed().as_nanos());
        // testpmd's runtime directories (config, sockets), removed once both exited.
        let _runtime = [
            ScratchDir(format!("/var/run/dpdk/{tag}-rx").into()),
            ScratchDir(format!("/var/run/dpdk/{tag}-tx").into()),
        ];
        // Forwarding lcore 1 of each process on its CPU; main lcores on the other one.
        let mut rx = Supervised::spawn(
            "receiver testpmd",
            &mut testpmd(
                &tool,
                &format!("0@{tx_cpu},1@{rx_cpu}"),
                &huge,
                &format!("{tag}-rx"),
                &rx_vdev,
                "rxonly",
                size,
            ),
        )?;
        // The receiver creates the socket: wait for it before the sender connects.
        let ready = Instant::now();
        while !std::path::Path::new(&sock).exists() {
            let _ = rx.line(Duration::from_millis(20));
            if let Some(st) = rx.exited() {
                return Err(ProbeError::Failed(format!(
                    "receiver testpmd exited ({st}) before making {sock}: {}",
                    rx.tail(6)
                )));
            }
            if ready.elapsed() > Duration::from_secs(15) || budget.should_stop(started).is_some() {
                return Err(ProbeError::Failed(format!("receiver testpmd made no socket within 15 s: {}", rx.tail(6))));
            }
        }
        let mut tx = Supervised::spawn(
            "sender testpmd",
            &mut testpmd(
                &tool,
                &format!("0@{rx_cpu},1@{tx_cpu}"),
                &huge,
                &format!("{tag}-tx"),
                &tx_vdev,
                "txonly",
                size,
            ),
        )?;
        let mut rates: Vec<f64> = Vec::new();
        let mut first: Option<Instant> = None;
        let mut stopped = None;
        loop {
            while tx.line(Duration::from_millis(0)).is_some() {}
            if let Some(l) = rx.line(Duration::from_millis(50)) {
                if let Some(pps) = field(&l, "Rx-pps:") {
                    match first {
                        None if pps > 0 => first = Some(Instant::now()),
                        // The first second with packets is a ramp: not a sample.
                        Some(_) => rates.push(pps as f64 / 1e6),
                        None => {}
                    }
                }
            }
            for p in [&mut rx, &mut tx] {
                if let Some(st) = p.exited() {
                    return Err(ProbeError::Failed(format!(
                        "{} exited ({st}) during the trial: {}",
                        p.name,
                        p.tail(6)
                    )));
                }
            }
            if rates.len() >= seconds {
                break;
            }
            if let Some(why) = budget.should_stop(started) {
                stopped = Some(why);
                break;
            }
            if first.is_none() && started.elapsed() > LINK_TIMEOUT {
                return Err(ProbeError::Failed(format!(
                    "no packet reached the receiver within {} s: {}",
                    LINK_TIMEOUT.as_secs(),
                    rx.tail(6)
                )));
            }
        }
        let Some(first) = first else {
            return Err(ProbeError::Interrupted(format!("{name}: stopped before the link carried packets")));
        };
        tx.stop(Duration::from_secs(3));
        let active = first.elapsed();
        // Let the receiver print one more statistics block after the sender left.
        let after = Instant::now();
        while after.elapsed() < Duration::from_millis(1500) {
            if rx.line(Duration::from_millis(50)).is_some_and(|l| l.contains("Rx-pps:")) {
                break;
            }
        }
        rx.stop(Duration::from_secs(3));
        let sent = last(&tx.log, "TX-total:")
            .ok_or_else(|| ProbeError::Failed(format!("sender printed no TX-total: {}", tx.tail(6))))?;
        let tx_dropped = last(&tx.log, "TX-dropped:").unwrap_or(0);
        // The highest count the receiver printed: a memif server resets its counters
        // when the client leaves.
        let received = rx
            .log
            .iter()
            .filter_map(|l| field(l, "RX-packets:"))
            .max()
            .ok_or_else(|| ProbeError::Failed(format!("receiver printed no RX-packets: {}", rx.tail(6))))?;
        drop((tx, rx, dir, huge));
        if received > sent {
            return Err(ProbeError::Failed(format!("receiver counted {received} packets, the sender offered {sent}")));
        }
        let t = Throughput {
            sent,
            received,
            dropped: sent - received,
            lost: (sent - tx_dropped).saturating_sub(received),
            duration_s: active.as_secs_f64(),
            frame_bytes: f64::from(size),
            interval_mpps: rates.clone(),
            ..Default::default()
        };
        let mut s = Samples::new(Vec::new(), budget.method, 0, "testpmd port statistics (per second)");
        s.metrics.push(Metric::new("median_rx_mpps", median(&rates), "Mpps"));
        s.metrics.push(Metric::new("tx_refused", tx_dropped as f64, "packets"));
        s.notes.push(format!("sender forwards on cpu {tx_cpu}, receiver on cpu {rx_cpu}; {} one-second samples after the first; dropped = sent (TX-total) - received (the receiver's highest RX-packets); no per-packet latency", rates.len()));
        if let Some(why) = stopped {
            s.partial = Some(format!("{why} after {} of {seconds} one-second samples", rates.len()));
        }
        s.throughput = Some(t);
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_lines_parse() {
        assert_eq!(field("  Rx-pps:      5600123          Rx-bps:   2867200000", "Rx-pps:"), Some(5_600_123));
        assert_eq!(
            field("  TX-packets: 1234           TX-dropped: 5678          TX-total: 6912", "TX-total:"),
            Some(6912)
        );
        assert_eq!(field("  TX-packets: 1234           TX-dropped: 5678", "TX-dropped:"), Some(5678));
        assert_eq!(field("nothing here", "Rx-pps:"), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn a_missing_testpmd_names_its_package() {
        assert!(missing_tool(TESTPMD, PACKAGE).contains("apt-get install -y dpdk-dev"));
        assert!(missing_tool(TESTPMD, PACKAGE).starts_with("`dpdk-testpmd` not found (Debian package `dpdk-dev`"));
    }

    fn trial(kind: Kind) {
        if let Err(why) = support() {
            println!("SKIPPED: {}: {why}", kind.name());
            return;
        }
        let mut b = Budget::quick(1);
        b.duration = Some(Duration::from_secs(2));
        let s = Dpdk(kind).run(&Point::parse("size=64").unwrap(), &b).unwrap();
        let t = s.throughput.unwrap();
        assert_eq!(t.violation(), None, "{t:?}");
        assert!(t.received > 0 && t.mpps() > 0.0, "{t:?}");
        // With the lock no other trial of this process holds a mount.
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let leftovers: Vec<String> = std::fs::read_to_string("/proc/mounts")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&format!("ivbench-huge-{}-", std::process::id())))
            .map(String::from)
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn vhost_runs_and_cleans_up() {
        trial(Kind::Vhost);
    }

    #[test]
    fn memif_runs_and_cleans_up() {
        trial(Kind::Memif);
    }
}
