//! What else is competing for the machine while a point runs. Shared machines move
//! figures by 10-30%, and a second ivbench measuring on the same CPUs can double them:
//! that must be visible in the row, not guessed afterwards. Read from /proc only.

use std::fs;

use serde::Serialize;

/// Steal above this share of CPU time during a point marks the row.
const STEAL_MARK: f64 = 0.05;

/// One look at the machine's load.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadSample {
    /// /proc/loadavg: 1, 5 and 15 minute averages.
    pub loadavg: Option<[f64; 3]>,
    /// /proc/stat's aggregate `cpu` line: steal ticks and all ticks (USER_HZ) since boot;
    /// the difference between the start and end samples is the run's steal share.
    pub steal_ticks: u64,
    pub total_ticks: u64,
    /// Other ivbench processes (not this one, not its own workers): pid and command line.
    pub other_ivbench: Vec<(u32, String)>,
    /// Threads runnable on the machine at that moment (/proc/stat `procs_running`, this
    /// reader included): beside the CPU count, whether busy probe threads had CPUs free.
    pub runnable_threads: Option<u64>,
}

impl LoadSample {
    pub fn now() -> Self {
        let loadavg = fs::read_to_string("/proc/loadavg").ok().and_then(|t| parse_loadavg(&t));
        let (steal_ticks, total_ticks) =
            fs::read_to_string("/proc/stat").ok().and_then(|t| parse_cpu_line(&t)).unwrap_or((0, 0));
        LoadSample {
            loadavg,
            steal_ticks,
            total_ticks,
            other_ivbench: other_ivbench(),
            runnable_threads: probe_api::cpu::runnable_threads(),
        }
    }
}

fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_whitespace().map(|w| w.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// (steal, total) ticks of the aggregate `cpu` line of /proc/stat.
fn parse_cpu_line(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).map(|w| w.parse().unwrap_or(0)).collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is
    // already inside user, so it is not added again.
    let steal = *v.get(7)?;
    let total = v.iter().take(8).sum();
    Some((steal, total))
}

/// The parent pid of `pid`, from /proc/<pid>/stat (the field after the parenthesised
/// command, which may itself hold spaces and parentheses).
fn ppid_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid` is this process or one of its descendants (VM workers, supervised tools).
fn ours(pid: u32, me: u32) -> bool {
    let mut p = pid;
    for _ in 0..64 {
        if p == me {
            return true;
        }
        match ppid_of(p) {
            Some(0) | Some(1) | None => return false,
            Some(q) => p = q,
        }
    }
    false
}

fn other_ivbench() -> Vec<(u32, String)> {
    let me = std::process::id();
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    let mut found = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim_end() != "ivbench" || ours(pid, me) {
            continue;
        }
        let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd: String = String::from_utf8_lossy(&cmd).replace('\0', " ").trim().chars().take(120).collect();
        found.push((pid, cmd));
    }
    found.sort();
    found
}

/// What competed with a point that ran between `before` and `after`; None when nothing
/// was seen.
pub fn judge(before: &LoadSample, after: &LoadSample) -> Option<String> {
    let mut why = Vec::new();
    let mut others: Vec<&(u32, String)> = before.other_ivbench.iter().chain(after.other_ivbench.iter()).collect();
    others.sort();
    others.dedup();
    if !others.is_empty() {
        let list: Vec<String> = others.iter().map(|(p, c)| format!("pid {p} `{c}`")).collect();
        why.push(format!("another ivbench was running ({})", list.join(", ")));
    }
    let total = after.total_ticks.saturating_sub(before.total_ticks);
    if total > 0 {
        let steal = after.steal_ticks.saturating_sub(before.steal_ticks) as f64 / total as f64;
        if steal > STEAL_MARK {
            why.push(format!(
                "steal time {:.0}% of CPU time (the hypervisor ran something else on these CPUs)",
                steal * 100.0
            ));
        }
    }
    (!why.is_empty()).then(|| why.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_formats() {
        assert_eq!(parse_loadavg("0.52 0.58 0.59 1/467 12345\n"), Some([0.52, 0.58, 0.59]));
        assert_eq!(parse_loadavg("garbage"), None);
        let stat = "cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 1 2 3\n";
        assert_eq!(parse_cpu_line(stat), Some((35, 1000)));
    }

    #[test]
    fn steal_and_other_runs_mark_a_point() {
        let a = LoadSample { steal_ticks: 100, total_ticks: 1000, ..Default::default() };
        let quiet = LoadSample { steal_ticks: 101, total_ticks: 2000, ..Default::default() };
        assert_eq!(judge(&a, &quiet), None);
        let stolen = LoadSample { steal_ticks: 300, total_ticks: 2000, ..Default::default() };
        assert!(judge(&a, &stolen).unwrap().contains("steal time 20%"));
        let busy = LoadSample { other_ivbench: vec![(42, "ivbench sweep".into())], ..quiet.clone() };
        assert!(judge(&a, &busy).unwrap().contains("pid 42 `ivbench sweep`"));
    }

    #[test]
    fn this_process_is_not_another_ivbench() {
        let me = std::process::id();
        assert!(ours(me, me));
        assert!(!LoadSample::now().other_ivbench.iter().any(|(p, _)| *p == me));
    }
}
