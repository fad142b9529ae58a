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
