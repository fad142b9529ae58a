//! The guest side's layers use only the layers before them (no import cycle):
//! abi (abi, layout, error) -> backend (backend, host, arch, views) -> image (payloads) ->
//! vm/vcpu (vm, vcpu, run, sampling, shared, watchdog) -> helpers (irqchip, kvmstats,
//! native) -> worker -> probes. Reads every source file's `crate::` / `super::` paths.

use std::path::{Path, PathBuf};

/// The layer of a module path (`["vmm", "vm"]`, `["payloads", "notify"]`, ...).
fn layer(path: &[String]) -> Option<u32> {
    let s: Vec<&str> = path.iter().map(String::as_str).collect();
    Some(match s.as_slice() {
        ["abi", ..] | ["vmm", "layout", ..] | ["vmm", "error", ..] => 0,
        ["vmm", "backend", ..] | ["vmm", "host", ..] | ["vmm", "arch", ..] | ["vmm", "views", ..] => 1,
        ["payloads", ..] => 2,
        ["vmm", "vm" | "vcpu" | "run" | "sampling" | "shared" | "watchdog", ..] => 3,
        ["vmm", "irqchip" | "kvmstats" | "native", ..] => 4,
        ["worker", ..] => 5,
        ["probes", ..] => 6,
        // the crate root and vmm/mod.rs only declare and re-export
        [] | ["vmm"] | ["lib"] => return None,
        // items re-exported by vmm/mod.rs, by name
        ["vmm", item, ..] => match *item {
            "VmmError" | "GuestState" => 0,
            "Backend" | "BackendKind" | "KvmHost" | "host" => 1,
            "Vm" | "Vcpu" | "Exit" | "ExitStats" | "Handled" | "Sampled" | "SampleStop" | "SharedMemory"
            | "Backing" => 3,
            "NativeCheck" => 4,
            "self" => return None,
            other => panic!("unknown vmm item {other}"),
        },
        // other items of the crate root (re-exports; `super::` inside an inline module)
        [first, ..] if !["abi", "payloads", "vmm", "worker", "probes"].contains(first) => return None,
        other => panic!("no layer for {other:?}"),
    })
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a source file below src/ (`vmm/backend/pvm.rs` -> vmm, backend, pvm).
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs").to_string();
    if stem != "mod" && stem != "lib" {
        parts.push(stem);
    }
    parts
}

/// Every `crate::a::b` / `super::a` path in `text` (one level of `{...}` expanded),
/// resolved against the module `me`.
fn paths(text: &str, me: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    for start in ["crate::", "super::"] {
        let mut at = 0;
        while let Some(i) = code[at..].find(start) {
            let before = code[..at + i].chars().last();
            at += i + start.len();
            let rest = &code[at..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$' || c == ':') {
                continue;
            }
            let mut base: Vec<String> = if start == "crate::" {
                Vec::new()
            } else {
                // module_of already names a mod.rs by its directory
                let mut b = me.to_vec();
                b.pop();
                b
            };
            let mut s = rest;
            loop {
                let ident: String = s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if ident.is_empty() {
                    if let Some(inner) = s.strip_prefix('{') {
                        let body = &inner[..inner.find('}').unwrap_or(inner.len())];
                        for item in body.split(',') {
                            let item = item.trim().split("::").next().unwrap_or("").trim();
                            if !item.is_empty() && item != "self" {
                                let mut p = base.clone();
                                p.push(item.to_string());
                                out.push(p);
                            }
                        }
                    } else {
                        out.push(base.clone());
                    }
                    break;
                }
                if ident == "super" {
                    base.pop();
                } else {
                    base.push(ident.clone());
                }
                s = &s[ident.len()..];
                match s.strip_prefix("::") {
                    Some(r) => s = r,
                    None => {
                        out.push(base.clone());
                        break;
                    }
                }
            }
        }
    }
    out
}

#[test]
fn every_module_uses_only_layers_before_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let mut checked = 0;
    let mut bad = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        if rel.starts_with("bin") {
            continue;
        }
        let me = module_of(rel);
        let Some(mine) = layer(&me) else { continue };
        let text = std::fs::read_to_string(&f).unwrap();
        for p in paths(&text, &me) {
            if let Some(theirs) = layer(&p) {
                checked += 1;
                if theirs > mine {
                    bad.push(format!("{} (layer {mine}) uses {} (layer {theirs})", rel.display(), p.join("::")));
                }
            }
        }
    }
    assert!(checked > 100, "only {checked} paths checked: the scanner is broken");
    assert!(bad.is_empty(), "upward uses:\n{}", bad.join("\n"));
}

#[test]
fn the_scanner_sees_an_upward_use() {
    let me: Vec<String> = ["vmm", "backend", "pvm"].iter().map(|s| s.to_string()).collect();
    let p = paths("use crate::vmm::{vm::Vcpu, layout};\nuse super::super::super::worker::Group;", &me);
    let layers: Vec<Option<u32>> = p.iter().map(|p| layer(p)).collect();
    assert!(layers.contains(&Some(3)), "{p:?}");
    assert!(layers.contains(&Some(5)), "{p:?}");
}
