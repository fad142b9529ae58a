//! The manifest's KVM backend is the one the VMM ran on: both come from one fact-finder
//! (`guest_probes::vmm::host`). Needs /dev/kvm (prints SKIPPED otherwise; fails instead
//! when IVBENCH_REQUIRE_KVM=1).

use std::fs;
use std::process::Command;

fn have_kvm() -> bool {
    if std::path::Path::new("/dev/kvm").exists() {
        return true;
    }
    assert!(
        std::env::var("IVBENCH_REQUIRE_KVM").as_deref() != Ok("1"),
        "IVBENCH_REQUIRE_KVM=1 but there is no /dev/kvm"
    );
    println!("SKIPPED: no /dev/kvm");
    eprintln!("SKIPPED: no /dev/kvm");
    false
}

#[test]
fn manifest_backend_is_the_vmm_backend() {
    if !have_kvm() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_ivbench"))
        .args(["run", "vm.native.loop", "--iterations", "50", "--out"])
        .arg(out.path())
        .output()
        .expect("ivbench runs");
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let run = fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().path()).find(|p| p.is_dir()).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&fs::read(run.join("manifest.json")).unwrap()).unwrap();
    let vmm = guest_probes::vmm::host().backend_kind().expect("the VMM finds a backend").name();
    assert_eq!(m["fingerprint"]["kvm"]["backend"], vmm, "fingerprint: {}", m["fingerprint"]["kvm"]);
    assert_eq!(m["discovered"]["guest_backend"]["backend"], vmm, "{}", m["discovered"]["guest_backend"]);
    let fp = ivbench::fingerprint::collect(&[]);
    assert_eq!(fp.kvm.backend.as_deref(), Some(vmm));
    assert_eq!(fp.kvm.api_version, guest_probes::vmm::host().api_version());
}

/// Process ids whose parent is `ppid` (from /proc/<pid>/stat).
fn children_of(ppid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else { continue };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        if rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(ppid) {
            out.push(pid);
        }
    }
    out
}

fn gone(pid: u32) -> bool {
    // a reaped or zombie process: no /proc entry, or state Z
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')),
    }
}

#[test]
fn vm_workers_die_with_a_killed_ivbench() {
    if !have_kvm() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    // ~1.5e9 round trips: minutes of work, so the workers are surely running when the
    // parent is killed.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ivbench"))
        .args(["run", "vm.notify.poll-intervm", "--method", "batched", "--batch", "1000", "--iterations", "1500000"])
        .arg("--out")
        .arg(out.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    let workers = loop {
        let w = children_of(child.id());
        if w.len() == 2 {
            break w;
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(20), "no two VM workers under ivbench: {w:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    child.kill().unwrap(); // SIGKILL: no handler of ivbench runs
    child.wait().unwrap();
    let t1 = std::time::Instant::now();
    while !workers.iter().all(|&p| gone(p)) {
        assert!(
            t1.elapsed() < std::time::Duration::from_secs(1),
            "VM workers {workers:?} outlived their parent by 1 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
