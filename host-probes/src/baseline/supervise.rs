//! Supervision of what the baselines borrow from the machine: child processes (own
//! process group, killed with the group when dropped, and by the kernel should this
//! thread die first), a hugetlbfs mount and the hugepage reservation behind it, scratch
//! directories for sockets, network namespaces. Each is a guard whose drop undoes it, so
//! every exit path of a probe (done, Ctrl-C, failure, panic) leaves nothing behind. Names
//! carry the owner's pid, so leftovers of a process that was killed outright are found
//! and removed by the next run ([`sweep_stale`]).

use std::ffi::CString;
use std::fs;
use std::io::{self, BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use probe_api::ProbeError;

/// Prefix of every name the baselines create (mounts, directories, namespaces).
pub const PREFIX: &str = "ivbench-";

/// Where `tool` is on PATH (or the sbin directories root's PATH may lack).
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// `unsupported: ...` for a missing tool, naming the Debian package that has it.
pub fn missing_tool(tool: &str, package: &str) -> String {
    format!("`{tool}` not found (Debian package `{package}`): apt-get install -y {package}")
}

/// The `what` of every ScratchDir and of the hugetlbfs mount points: the only
/// directories sweep_stale may remove from the temporary directory.
const SCRATCH_KINDS: [&str; 2] = ["dpdk", "huge"];

/// A scratch directory of our own, removed with its contents when dropped.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(what: &str) -> Result<ScratchDir, ProbeError> {
        let dir = std::env::temp_dir().join(format!("{PREFIX}{what}-{}-{}", std::process::id(), unique()));
        fs::create_dir(&dir).map_err(|e| ProbeError::io(format!("creating {}", dir.display()), e))?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A child in its own process group, whose output lines arrive on a channel. Dropping it
/// sends SIGTERM to the group, then SIGKILL after a grace period, and reaps it.
pub struct Supervised {
    pub name: String,
    child: Child,
    pub lines: mpsc::Receiver<String>,
    /// Every line seen so far, for the error message when the child fails.
    pub log: Vec<String>,
}

impl Supervised {
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Supervised, ProbeError> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        // SAFETY: the closure runs in the child between fork and exec and only calls
        // prctl, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                // The child dies with the thread that started it, even on a hard exit.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| ProbeError::io(format!("starting {name}"), e))?;
        let (tx, rx) = mpsc::channel();
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn io::Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Supervised { name: name.into(), child, lines: rx, log: Vec::new() })
    }

    /// The next output line within `wait`, None on timeout or end of output.
    pub fn line(&mut self, wait: Duration) -> Option<String> {
        let l = self.lines.recv_timeout(wait).ok()?;
        self.log.push(l.clone());
        if self.log.len() > 2000 {
            self.log.drain(..1000);
        }
        Some(l)
    }

    /// Whether the child has exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends `sig` to the child's process group.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill with a negative pid signals the group the child leads. Linux does
        // not hand out a pid still in use as a process group id, so while any member of
        // the group lives the signal reaches only them; kill itself touches no memory.
        unsafe { libc::kill(-(self.child.id() as i32), sig) };
    }

    /// The last lines of output, for error messages.
    pub fn tail(&self, n: usize) -> String {
        self.log.iter().rev().take(n).rev().cloned().collect::<Vec<_>>().join(" | ")
    }

    /// Asks the group to end (SIGINT, as a user would), waits up to `grace` collecting
    /// output, then kills it.
    pub fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        self.signal(libc::SIGINT);
        let end = Instant::now() + grace;
        while Instant::now() < end && self.exited().is_none() {
            let _ = self.line(Duration::from_millis(20));
        }
        while self.line(Duration::from_millis(1)).is_some() {}
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.signal(libc::SIGTERM);
            let end = Instant::now() + Duration::from_secs(2);
            while Instant::now() < end && self.exited().is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Whatever else is left in the group (the leader may be gone already) goes too.
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

/// A hugetlbfs mount of our own, with enough 2 MiB pages reserved for it; dropping it
/// unmounts, removes the directory and gives the pages back (the count it found).
pub struct HugeMount {
    pub dir: PathBuf,
    previous_pages: Option<u64>,
}

fn read_pages() -> Option<u64> {
    fs::read_to_string(NR_HUGEPAGES).ok()?.trim().parse().ok()
}

impl HugeMount {
    pub fn new(pages: u64) -> Result<HugeMount, ProbeError> {
        let before = read_pages()
            .ok_or_else(|| ProbeError::Unsupported(format!("{NR_HUGEPAGES} unreadable: no hugepage support")))?;
        let mut previous_pages = None;
        if before < pages {
            fs::write(NR_HUGEPAGES, pages.to_string()).map_err(|e| {
                ProbeError::Unsupported(format!(
                    "cannot reserve {pages} hugepages via {NR_HUGEPAGES} (root needed): {e}"
                ))
            })?;
            previous_pages = Some(before);
        }
        let dir = std::env::temp_dir().join(format!("{PREFIX}huge-{}-{}", std::process::id(), unique()));
        let guard = HugeMount { dir: dir.clone(), previous_pages };
        fs::create_dir(&dir).map_err(|e| ProbeError::io(format!("creating {}", dir.display()), e))?;
        let c = |s: &str| CString::new(s).expect("no NUL");
        let target = c(&dir.to_string_lossy());
        // SAFETY: all four strings are NUL-terminated and outlive the call; no data.
        let rc =
            unsafe { libc::mount(c("nodev").as_ptr(), target.as_ptr(), c("hugetlbfs").as_ptr(), 0, std::ptr::null()) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            let _ = fs::remove_dir(&dir);
            return Err(ProbeError::Unsupported(format!("mounting hugetlbfs at {}: {e}", dir.display())));
        }
        let got = read_pages().unwrap_or(0);
        if got < pages {
            return Err(ProbeError::Unsupported(format!(
                "only {got} of {pages} hugepages could be reserved (memory fragmented?)"
            )));
        }
        Ok(guard)
    }
}

impl Drop for HugeMount {
    fn drop(&mut self) {
        if let Ok(target) = CString::new(self.dir.to_string_lossy().as_bytes()) {
            // SAFETY: a NUL-terminated path; MNT_DETACH so a busy mount still goes.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = fs::remove_dir(&self.dir);
        if let Some(p) = self.previous_pages {
            let _ = fs::write(NR_HUGEPAGES, p.to_string());
        }
    }
}

/// A network namespace made for the run; dropping it deletes it (and the veth ends in it).
pub struct Netns {
    pub name: String,
    ip: PathBuf,
}

impl Netns {
    pub fn new(ip: &Path, role: &str) -> Result<Netns, ProbeError> {
        let name = format!("{PREFIX}{}-{}-{role}", std::process::id(), unique());
        run_ip(ip, &["netns", "add", &name])?;
        Ok(Netns { name, ip: ip.to_path_buf() })
    }
    /// `/run/netns/<name>`, for setns.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(&self.ip)
            .args(["netns", "del", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs `ip ARGS`, failing with its stderr.
pub fn run_ip(ip: &Path, args: &[&str]) -> Result<(), ProbeError> {
    let o = Command::new(ip)
        .args(args)
        .output()
        .map_err(|e| ProbeError::io(format!("running ip {}", args.join(" ")), e))?;
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
        let msg = format!("ip {}: {err}", args.join(" "));
        return Err(if err.contains("Operation not permitted") {
            ProbeError::Unsupported(msg)
        } else {
            ProbeError::Failed(msg)
        });
    }
    Ok(())
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid in a name this module made (`ivbench-<what>-<pid>-...` or `ivbench-<pid>-...`).
fn owner(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').find_map(|p| p.parse().ok())
}

/// Removes what an ivbench killed outright left behind: hugetlbfs mounts, scratch
/// directories and namespaces whose owner pid no longer runs. Returns what it removed.
pub fn sweep_stale(ip: Option<&Path>) -> Vec<String> {
    let mut removed = Vec::new();
    if let Ok(mounts) = fs::read_to_string("/proc/mounts") {
        for m in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
            let name = Path::new(m).file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            if name.starts_with(&format!("{PREFIX}huge-")) && owner(&name).is_some_and(|p| !alive(p)) {
                if let Ok(c) = CString::new(m) {
                    // SAFETY: a NUL-terminated path from /proc/mounts.
                    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                    removed.push(format!("mount {m}"));
                }
            }
        }
    }
    if let Ok(rd) = fs::read_dir(std::env::temp_dir()) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            // Only the kinds of directory this module makes: other tools' files stay.
            let ours = SCRATCH_KINDS.iter().any(|k| name.starts_with(&format!("{PREFIX}{k}-")));
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if ours && is_dir && owner(&name).is_some_and(|p| !alive(p)) && fs::remove_dir_all(e.path()).is_ok() {
                removed.push(format!("directory {}", e.path().display()));
            }
        }
    }
    if let (Some(ip), Ok(rd)) = (ip, fs::read_dir("/run/netns")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with(PREFIX)
                && owner(&name).is_some_and(|p| !alive(p))
                && run_ip(ip, &["netns", "del", &name]).is_ok()
            {
                removed.push(format!("netns {name}"));
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_sweeps_touch_only_their_own_kinds() {
        // A dead pid (pid_max is at most 2^22) under a name another tool might use.
        let other = std::env::temp_dir().join("ivbench-notes-4194303");
        fs::create_dir_all(&other).unwrap();
        let mine = std::env::temp_dir().join("ivbench-dpdk-4194303-0");
        fs::create_dir_all(&mine).unwrap();
        sweep_stale(None);
        assert!(other.exists() && !mine.exists());
        fs::remove_dir(&other).unwrap();
    }

    #[test]
    fn owners_are_read_from_names() {
        assert_eq!(owner("ivbench-huge-1234-0"), Some(1234));
        assert_eq!(owner("ivbench-5678-3-tx"), Some(5678));
        assert_eq!(owner("other-1234"), None);
    }

    #[test]
    fn a_supervised_group_is_killed_on_drop() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started; sleep 1000 & sleep 1000"]);
        let mut s = Supervised::spawn("sh", &mut cmd).unwrap();
        assert_eq!(s.line(Duration::from_secs(5)).as_deref(), Some("started"));
        let pgid = s.child.id() as i32;
        drop(s);
        // Killed members may linger a moment as zombies until init reaps them.
        let end = Instant::now() + Duration::from_secs(5);
        // SAFETY: signal 0 only asks whether any process of the group still exists.
        while unsafe { libc::kill(-pgid, 0) } == 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above.
        assert_ne!(unsafe { libc::kill(-pgid, 0) }, 0, "the whole group is gone, the backgrounded sleep too");
    }

    #[test]
    fn a_scratch_dir_goes_with_its_guard() {
        let d = ScratchDir::new("dpdk").unwrap();
        let p = d.0.clone();
        fs::write(p.join("sock"), b"x").unwrap();
        drop(d);
        assert!(!p.exists());
    }
}
