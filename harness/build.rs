//! Stamps the binary with the git commit it was built from, so that every run manifest
//! says which code produced its numbers.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));

    let commit = git(&manifest_dir, &["rev-parse", "--short=12", "HEAD"]).filter(|c| !c.is_empty());
    let stamp = match commit {
        Some(c) => {
            // --no-optional-locks: status must not rewrite the index, which would both race
            // with concurrent git commands and retrigger this script (it watches the index).
            let dirty =
                git(&manifest_dir, &["--no-optional-locks", "status", "--porcelain"]).is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c}-dirty")
            } else {
                c
            }
        }
        None => "unknown".to_string(),
    };
    println!("cargo:rustc-env=IVBENCH_GIT_COMMIT={stamp}");

    // Asking git for the git dir handles worktrees and submodules, where .git is a file.
    if let Some(git_dir) = git(&manifest_dir, &["rev-parse", "--absolute-git-dir"]) {
        let git_dir = PathBuf::from(git_dir);
        for f in ["HEAD", "index", "packed-refs"] {
            println!("cargo:rerun-if-changed={}", git_dir.join(f).display());
        }
        // A commit moves the branch ref, not HEAD itself.
        if let Some(head_ref) = git(&manifest_dir, &["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={}", git_dir.join(head_ref).display());
        }
    }
    // Editing a tracked file changes neither HEAD nor the index, yet makes the tree dirty;
    // watching the sources that go into the binary keeps `-dirty` honest for them.
    // (Edits elsewhere in the repository still do not trigger a rerun.)
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.toml");
    if let Some(root) = manifest_dir.parent() {
        for member in ["probe-api", "host-probes", "guest-probes"] {
            let src = root.join(member).join("src");
            if src.exists() {
                println!("cargo:rerun-if-changed={}", src.display());
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
