//! `path.veth`: the kernel's own path between two network namespaces. Two namespaces are
//! made for the run and joined by a veth pair (addresses only inside them); a pinned
//! sender writes the packet ring's test frames to an AF_PACKET socket on one end, a
//! pinned receiver reads and verifies them from the other. Open loop: a send the kernel
//! refuses (EAGAIN/ENOBUFS) is counted as dropped, never retried.
//!
//! Accounting: `sent` counts send attempts, `received` verified-or-not frames read,
//! `dropped = sent - received` (refused sends plus frames the kernel dropped on the way:
//! veth backlog, socket buffer); `lost` counts the sequence gaps, i.e. the frames the
//! kernel accepted and then dropped.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use packet_ring::frame::Check;
use packet_ring::traffic::SeqTracker;
use packet_ring::{FrameSize, Rate, Templates};
use probe_api::{cpu, tsc, Budget, Metric, Point, Probe, ProbeError, Samples, Support, Throughput};

use super::supervise::{find_tool, missing_tool, run_ip, sweep_stale, Netns};
use crate::pinning::{cpu_pair, two_cpus_support};

pub struct Veth;

const NAME: &str = "path.veth";
const TX_DEV: &str = "ivb0";
const RX_DEV: &str = "ivb1";
const MAX_LATENCY_SAMPLES: u64 = 100_000;
/// The receiver ends once the sender is done and nothing came for this long.
const DRAIN: Duration = Duration::from_millis(200);

fn root_support() -> Result<std::path::PathBuf, String> {
    let ip = find_tool("ip").ok_or_else(|| missing_tool("ip", "iproute2"))?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("making network namespaces needs root (CAP_NET_ADMIN)".into());
    }
    if !std::path::Path::new("/proc/self/ns/net").exists() {
        return Err("no network namespaces in this kernel".into());
    }
    Ok(ip)
}

/// Moves the calling thread into a namespace; the socket it then opens lives there.
fn enter(ns: &Netns) -> Result<(), ProbeError> {
    let path = ns.path();
    let f = std::fs::File::open(&path).map_err(|e| ProbeError::io(format!("opening {}", path.display()), e))?;
    // SAFETY: a valid namespace fd; setns changes only the calling thread's namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(ProbeError::last_os(format!("setns into {}", ns.name)));
    }
    Ok(())
}

/// An AF_PACKET socket bound to `dev` that carries only the test frames' ethertype.
fn packet_socket(dev: &str) -> Result<OwnedFd, ProbeError> {
    let proto = packet_ring::frame::ETHERTYPE.to_be() as i32;
    // SAFETY: plain socket creation; the result is checked and owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(ProbeError::last_os("socket(AF_PACKET)"));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = CString::new(dev).expect("no NUL");
    // SAFETY: a NUL-terminated interface name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(ProbeError::last_os(format!("if_nametoindex({dev})")));
    }
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid value to fill in.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto as u16;
    sll.sll_ifindex = index as i32;
    // SAFETY: sll is a valid sockaddr_ll of the stated size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc != 0 {
        return Err(ProbeError::last_os(format!("bind(AF_PACKET, {dev})")));
    }
    Ok(fd)
}

fn set_opt(fd: &OwnedFd, level: i32, name: i32, value: i32, what: &str) -> Result<(), ProbeError> {
    // SAFETY: value is an int of the size passed.
    let rc = unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, (&value as *const i32).cast(), 4) };
    if rc != 0 {
        return Err(ProbeError::last_os(what.to_string()));
    }
    Ok(())
}

struct Tx {
    sent: u64,
    refused: u64,
    started: Instant,
}

struct Rx {
    received: u64,
    corrupted: u64,
    seq: SeqTracker,
    latency: Vec<u64>,
    negative: u64,
    finished: Instant,
}

impl Probe for Veth {
    fn name(&self) -> &'static str {
        NAME
    }
    fn description(&self) -> &'static str {
        "kernel veth pair between two network namespaces made for the run: AF_PACKET sender -> AF_PACKET receiver, pinned (Mpps, loss, one-way latency)"
    }
    fn group(&self) -> &'static str {
        "path"
    }
    fn support(&self) -> Support {
        match root_support() {
            Err(why) => Support::Unsupported(why),
            Ok(_) => two_cpus_support(NAME),
        }
    }
    fn points(&self) -> Vec<Point> {
        ["64", "1518"].iter().map(|s| Point::none().with("size", s).with("rate", "max")).collect()
    }
    fn run(&self, point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
        let size = FrameSize::parse(point.get("size").unwrap_or("64")).map_err(ProbeError::Failed)?;
        let rate = Rate::parse(point.get("rate").unwrap_or("max")).map_err(ProbeError::Failed)?;
        let ip = root_support().map_err(ProbeError::Unsupported)?;
        let (tx_cpu, rx_cpu) = cpu_pair(budget, NAME)?;
        sweep_stale(Some(&ip));
        let a = Netns::new(&ip, "tx")?;
        let b = Netns::new(&ip, "rx")?;
        run_ip(&ip, &["-n", &a.name, "link", "add", TX_DEV, "type", "veth", "peer", "name", RX_DEV, "netns", &b.name])?;
        for (ns, dev, addr) in [(&a, TX_DEV, "10.199.0.1/30"), (&b, RX_DEV, "10.199.0.2/30")] {
            run_ip(&ip, &["-n", &ns.name, "addr", "add", addr, "dev", dev])?;
            // A 1518-byte test frame (FCS included in the size, as RFC 2544 counts it)
            // is 1504 bytes past the Ethernet header: over the default 1500 MTU.
            run_ip(&ip, &["-n", &ns.name, "link", "set", dev, "mtu", "2000"])?;
            run_ip(&ip, &["-n", &ns.name, "link", "set", dev, "up"])?;
        }
        let packets = budget.iterations;
        let stride = (packets / MAX_LATENCY_SAMPLES).max(1).next_power_of_two();
        let templates = Templates::new(size);
        let done = AtomicBool::new(false);
        let started = Instant::now();
        let deadline = budget.duration.map(|d| started + d);
        let hz = crate::ring::tsc_hz();
        let (tx, rx) = std::thread::scope(|s| {
            let rx = s.spawn(|| -> Result<Rx, ProbeError> {
                cpu::pin_current_thread(rx_cpu)
                    .map_err(|e| ProbeError::io(format!("pinning the receiver to cpu {rx_cpu}"), e))?;
                enter(&b)?;
                let fd = packet_socket(RX_DEV)?;
                set_opt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 4 << 20, "SO_RCVBUF")?;
                let tv = libc::timeval { tv_sec: 0, tv_usec: 20_000 };
                // SAFETY: tv is a timeval of the size passed.
                unsafe {
                    libc::setsockopt(
                        fd.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_RCVTIMEO,
                        (&tv as *const libc::timeval).cast(),
                        std::mem::size_of::<libc::timeval>() as u32,
                    )
                };
                let mut r = Rx {
                    received: 0,
                    corrupted: 0,
                    seq: SeqTracker::default(),
                    latency: Vec::new(),
                    negative: 0,
                    finished: Instant::now(),
                };
                let mut buf = vec![0u8; 2048];
                let mut quiet_since = None;
                loop {
                    // SAFETY: buf is writable for its length.
                    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                    if n <= 0 {
                        if done.load(Ordering::Acquire) {
                            let q = *quiet_since.get_or_insert_with(Instant::now);
                            if q.elapsed() >= DRAIN {
                                break;
                            }
                        }
                        if budget.stop.is_requested() && done.load(Ordering::Acquire) {
                            break;
                        }
                        continue;
                    }
                    quiet_since = None;
                    r.received += 1;
                    r.finished = Instant::now();
                    match templates.verify(&buf[..n as usize]) {
                        Check::Good { seq, tsc: sent_at } => {
                            r.seq.record(seq);
                            if seq & (stride - 1) == 0 && (r.latency.len() as u64) < MAX_LATENCY_SAMPLES {
                                let now = tsc::rdtsc();
                                r.negative += u64::from(now < sent_at);
                                r.latency.push(now.saturating_sub(sent_at));
                            }
                        }
                        Check::Corrupt(_) => r.corrupted += 1,
                    }
                }
                Ok(r)
            });
            let tx = s.spawn(|| -> Result<Tx, ProbeError> {
                let _done = crate::ring::Done(&done);
                cpu::pin_current_thread(tx_cpu)
                    .map_err(|e| ProbeError::io(format!("pinning the sender to cpu {tx_cpu}"), e))?;
                enter(&a)?;
                let fd = packet_socket(TX_DEV)?;
                // Give the receiver a moment to bind before the first frame.
                std::thread::sleep(Duration::from_millis(50));
                let interval = match rate {
                    Rate::Max => 0.0,
                    Rate::Mpps(m) => hz / (m * 1e6),
                };
                let mut buf = vec![0u8; 2048];
                let mut t = Tx { sent: 0, refused: 0, started: Instant::now() };
                let (t0, mut seq) = (tsc::rdtsc(), 0u64);
                while t.sent < packets {
                    let now = tsc::rdtsc();
                    if interval > 0.0 && now < t0 + (t.sent as f64 * interval) as u64 {
                        std::hint::spin_loop();
                        continue;
                    }
                    let len = size.len_of(seq) as usize;
                    let tpl = templates.get(len).expect("a template per length");
                    // SAFETY: buf holds 2048 >= len bytes and is this thread's own.
                    unsafe { tpl.write_to(buf.as_mut_ptr(), seq, now) };
                    // SAFETY: buf is readable for len bytes.
                    let rc = unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), len, libc::MSG_DONTWAIT) };
                    t.sent += 1;
                    if rc < 0 {
                        t.refused += 1;
                    } else {
                        seq += 1;
                    }
                    if t.sent & 1023 == 0
                        && (budget.should_stop(started).is_some() || deadline.is_some_and(|d| Instant::now() >= d))
                    {
                        break;
                    }
                }
                Ok(t)
            });
            (tx.join(), rx.join())
        });
        let tx = tx.map_err(|_| ProbeError::Failed("the sender thread panicked".into()))??;
        let rx = rx.map_err(|_| ProbeError::Failed("the receiver thread panicked".into()))??;
        drop((a, b));
        if rx.received > tx.sent {
            return Err(ProbeError::Failed(format!(
                "received {} frames of {} sent: frames from elsewhere on a private link",
                rx.received, tx.sent
            )));
        }
        let t = Throughput {
            sent: tx.sent,
            received: rx.received,
            dropped: tx.sent - rx.received,
            lost: rx.seq.lost,
            duplicated: rx.seq.duplicated,
            reordered: rx.seq.reordered,
            corrupted: rx.corrupted,
            offered_mpps: match rate {
                Rate::Max => None,
                Rate::Mpps(m) => Some(m),
            },
            duration_s: rx.finished.saturating_duration_since(tx.started).as_secs_f64().max(1e-6),
            frame_bytes: size.mean_len(),
            ..Default::default()
        };
        let mut s = Samples::new(
            rx.latency,
            budget.method,
            0,
            "host rdtsc: send stamp in the frame -> receiver rdtsc, cross-CPU",
        );
        s.metrics.push(Metric::new("refused_sends", tx.refused as f64, "packets"));
        s.notes.push(format!("sender cpu {tx_cpu} (the veth softirq runs there too), receiver cpu {rx_cpu}; dropped = sent - received: refused sends plus kernel drops (lost)"));
        if rx.negative > 0 {
            s.notes.push(format!("{} receive stamps below their send stamps: recorded as 0", rx.negative));
        }
        if let Some(why) = budget.should_stop(started).filter(|_| tx.sent < packets && deadline.is_none()) {
            s.partial = Some(format!("{why} after {} of {packets} packets", tx.sent));
        }
        s.throughput = Some(t);
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_veth_trial_balances_and_leaves_no_namespace() {
        if let Err(why) = root_support() {
            println!("SKIPPED: path.veth: {why}");
            return;
        }
        if cpu::allowed_cpus().len() < 2 {
            println!("SKIPPED: path.veth needs two CPUs");
            return;
        }
        let s = Veth.run(&Point::parse("size=64,rate=0.05").unwrap(), &Budget::quick(5000)).unwrap();
        let t = s.throughput.unwrap();
        assert_eq!(t.violation(), None, "{t:?}");
        assert_eq!(t.sent, 5000);
        assert_eq!(t.corrupted, 0);
        assert!(t.received > 0, "{t:?}");
        let left: Vec<String> = std::fs::read_dir("/run/netns")
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .filter(|n| n.contains(&format!("-{}-", std::process::id())))
                    .collect()
            })
            .unwrap_or_default();
        assert!(left.is_empty(), "namespaces left behind: {left:?}");
    }
}
