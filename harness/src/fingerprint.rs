//! The environment manifest of a run: everything about this host that can move a
//! virtualization latency figure, recorded so that two result sets can be compared
//! knowingly (or not compared at all).
//!
//! Every field degrades to `None` / empty / "unavailable" when its source is missing: a
//! fingerprint is taken at the start of every run and must never be the reason one fails.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::timing::{self, TscInfo};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Fingerprint {
    pub ivbench: BuildInfo,
    pub host: HostInfo,
    pub cpu: CpuInfo,
    pub tsc: TscInfo,
    pub kvm: KvmInfo,
    pub topology: Topology,
    pub power: PowerInfo,
    /// /sys/devices/system/cpu/vulnerabilities/*, name -> kernel's text. None when the
    /// directory does not exist (old kernel), empty only if it exists but is empty.
    pub vulnerabilities: Option<BTreeMap<String, String>>,
    pub perf: PerfInfo,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BuildInfo {
    pub version: String,
    /// Short commit, `-dirty` when the tree had changes at build time, or "unknown".
    pub git_commit: String,
    pub command_line: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HostInfo {
    pub hostname: Option<String>,
    /// `uname -r`.
    pub kernel_release: Option<String>,
    /// `uname -v`: build number and date, which distinguish two builds of one release.
    pub kernel_version: Option<String>,
    pub machine: Option<String>,
    pub total_memory_bytes: Option<u64>,
    pub clocksource: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CpuInfo {
    pub vendor: String,
    pub brand: Option<String>,
    pub family: Option<u8>,
    pub model: Option<u8>,
    pub stepping: Option<u8>,
    /// /proc/cpuinfo `microcode`; a hypervisor usually shows a made-up value here.
    pub microcode: Option<String>,
    pub flags: CpuFlags,
    /// CPUID 0x40000000 signature, read only when the hypervisor bit is set (otherwise
    /// that leaf returns unrelated data).
    pub hypervisor_vendor: Option<String>,
    /// The hypervisor bit is set: this "host" is itself a guest, so every VM ivbench
    /// creates is nested (or, with PVM, paravirtualized inside a guest).
    pub nested: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CpuFlags {
    pub vmx: bool,
    pub svm: bool,
    pub monitor_mwait: bool,
    pub invariant_tsc: bool,
    pub hypervisor: bool,
    pub x2apic: bool,
    pub tsc_deadline: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct KvmInfo {
    pub dev_kvm_present: bool,
    pub dev_kvm_accessible: bool,
    /// Why /dev/kvm could not be opened, when present but not accessible.
    pub dev_kvm_error: Option<String>,
    pub api_version: Option<i32>,
    /// `kvm_intel`, `kvm_amd` or `kvm_pvm`; None when no backend module is present.
    pub backend: Option<String>,
    /// All backend modules found in /sys/module. More than one is possible when they are
    /// built in; the one chosen as `backend` is explained in `notes`.
    pub backends_present: Vec<String>,
    pub backend_params: BTreeMap<String, String>,
    pub kvm_params: BTreeMap<String, String>,
    /// Parameters that exist but cannot be read (write-only), as `module.param`.
    pub unreadable_params: Vec<String>,
    pub notes: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Topology {
    /// /sys/devices/system/cpu/online as written by the kernel, e.g. "0-1".
    pub online_raw: Option<String>,
    pub online: Vec<usize>,
    /// CPUs this process may run on (sched_getaffinity).
    pub allowed: Vec<usize>,
    /// /sys/devices/system/cpu/smt/active; None when the file is absent.
    pub smt_active: Option<bool>,
    /// /sys/devices/system/cpu/isolated; empty when none are isolated, None when absent.
    pub isolated: Option<Vec<usize>>,
    /// The CPUs the run was asked to pin to.
    pub pinning: Vec<usize>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PowerInfo {
    /// /sys/devices/system/cpu/cpu0/cpufreq exists.
    pub cpufreq_present: bool,
    pub cpufreq_driver: Option<String>,
    /// CPU -> scaling_governor, for online CPUs that have one.
    pub governors: BTreeMap<usize, String>,
    pub cpuidle_driver: Option<String>,
    pub cpuidle_governor: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PerfAvailability {
    Hardware,
    SoftwareOnly { hardware_error: String },
    None { hardware_error: String, software_error: String },
}

impl std::fmt::Display for PerfAvailability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PerfAvailability::Hardware => f.write_str("hardware"),
            PerfAvailability::SoftwareOnly { hardware_error } => {
                write!(f, "software only: {hardware_error}")
            }
            PerfAvailability::None { hardware_error, software_error } => {
                write!(f, "none: hardware: {hardware_error}; software: {software_error}")
            }
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PerfInfo {
    pub counters: PerfAvailability,
    /// /proc/sys/kernel/perf_event_paranoid.
    pub paranoid: Option<i32>,
}

/// Takes the fingerprint of this host. `pinning` is the CPU list the run will use.
pub fn collect(pinning: &[usize]) -> Fingerprint {
    let uname = uname();
    let cpu = cpu_info();
    Fingerprint {
        ivbench: BuildInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit: env!("IVBENCH_GIT_COMMIT").to_string(),
            command_line: std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect(),
        },
        host: HostInfo {
            hostname: uname.as_ref().map(|u| u.nodename.clone()).or_else(|| read_trimmed("/proc/sys/kernel/hostname")),
            kernel_release: uname
                .as_ref()
                .map(|u| u.release.clone())
                .or_else(|| read_trimmed("/proc/sys/kernel/osrelease")),
            kernel_version: uname.as_ref().map(|u| u.version.clone()),
            machine: uname.as_ref().map(|u| u.machine.clone()),
            total_memory_bytes: total_memory(),
            clocksource: timing::current_clocksource(),
        },
        cpu,
        tsc: timing::detect_tsc(),
        kvm: kvm_info(),
        topology: topology(pinning),
        power: power_info(),
        vulnerabilities: read_dir_map(Path::new("/sys/devices/system/cpu/vulnerabilities")).map(|(m, _)| m),
        perf: perf_info(),
    }
}

fn opt(v: &Option<impl ToString>) -> String {
    v.as_ref().map_or_else(|| "unavailable".to_string(), |x| x.to_string())
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn cpu_list(cpus: &[usize]) -> String {
    if cpus.is_empty() {
        return "none".into();
    }
    // Back to the kernel's range notation, which stays short on big machines.
    let mut parts = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        i += 1;
    }
    parts.join(",")
}

impl Fingerprint {
    /// A readable multi-line summary, as printed by `ivbench env`.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail; the results are ignored for that reason.
        let b = &self.ivbench;
        let _ = writeln!(s, "ivbench     {} (commit {})", b.version, b.git_commit);
        let _ = writeln!(s, "command     {}", b.command_line.join(" "));

        let h = &self.host;
        let _ = writeln!(s, "\n[host]");
        let _ = writeln!(s, "  hostname      {}", opt(&h.hostname));
        let _ = writeln!(s, "  kernel        {} {}", opt(&h.kernel_release), h.kernel_version.as_deref().unwrap_or(""));
        let _ = writeln!(s, "  machine       {}", opt(&h.machine));
        let _ = writeln!(
            s,
            "  memory        {}",
            h.total_memory_bytes
                .map_or("unavailable".into(), |m| format!("{:.1} GiB ({m} bytes)", m as f64 / (1u64 << 30) as f64))
        );
        let _ = writeln!(s, "  clocksource   {}", opt(&h.clocksource));

        let c = &self.cpu;
        let _ = writeln!(s, "\n[cpu]");
        let _ = writeln!(s, "  vendor        {}", c.vendor);
        let _ = writeln!(s, "  brand         {}", opt(&c.brand));
        let _ = writeln!(
            s,
            "  family/model/stepping  {}/{}/{}",
            c.family.map_or("?".into(), |v| format!("{v:#x}")),
            c.model.map_or("?".into(), |v| format!("{v:#x}")),
            c.stepping.map_or("?".into(), |v| v.to_string())
        );
        let _ = writeln!(s, "  microcode     {}", opt(&c.microcode));
        let f = &c.flags;
        let _ = writeln!(
            s,
            "  flags         vmx={} svm={} monitor/mwait={} invariant_tsc={} hypervisor={} x2apic={} tsc_deadline={}",
            yes_no(f.vmx),
            yes_no(f.svm),
            yes_no(f.monitor_mwait),
            yes_no(f.invariant_tsc),
            yes_no(f.hypervisor),
            yes_no(f.x2apic),
            yes_no(f.tsc_deadline)
        );
        let _ = writeln!(
            s,
            "  environment   {}",
            if c.nested {
                let hv = c.hypervisor_vendor.as_deref().unwrap_or("unknown vendor");
                // PVM needs no VMX/SVM: its guests are paravirtualized, not hardware-nested,
                // which changes what an exit costs, so the two cases are named apart.
                if self.kvm.backend.as_deref() == Some("kvm_pvm") {
                    format!(
                        "NESTED: running under a hypervisor ({hv}); VMs created here are PVM guests inside this guest"
                    )
                } else {
                    format!("NESTED: running under a hypervisor ({hv}); VMs created here are nested")
                }
            } else {
                "bare metal (hypervisor bit clear)".into()
            }
        );

        let t = &self.tsc;
        let _ = writeln!(s, "\n[tsc]");
        let _ = writeln!(s, "  rate          {} kHz (source: {})", t.khz, t.source);
        let _ =
            writeln!(s, "  calibrated    {}", t.calibrated_khz.map_or("unavailable".into(), |k| format!("{k} kHz")));
        let _ = writeln!(
            s,
            "  invariant={} constant_tsc={} nonstop_tsc={}",
            yes_no(t.invariant),
            yes_no(t.constant_tsc),
            yes_no(t.nonstop_tsc)
        );
        for n in &t.notes {
            let _ = writeln!(s, "  note: {n}");
        }

        let k = &self.kvm;
        let _ = writeln!(s, "\n[kvm]");
        let _ = writeln!(
            s,
            "  /dev/kvm      {}",
            match (k.dev_kvm_present, k.dev_kvm_accessible) {
                (false, _) => "absent".to_string(),
                (true, true) => "present, accessible".to_string(),
                (true, false) => format!("present, NOT accessible: {}", k.dev_kvm_error.as_deref().unwrap_or("?")),
            }
        );
        let _ = writeln!(s, "  api version   {}", opt(&k.api_version));
        let _ = writeln!(s, "  backend       {}", k.backend.as_deref().unwrap_or("none"));
        for n in &k.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        if let Some(be) = &k.backend {
            let _ = writeln!(s, "  {be} parameters:");
            for (p, v) in &k.backend_params {
                let _ = writeln!(s, "    {p} = {v}");
            }
        }
        if !k.kvm_params.is_empty() {
            let _ = writeln!(s, "  kvm parameters:");
            for (p, v) in &k.kvm_params {
                let _ = writeln!(s, "    {p} = {v}");
            }
        }
        if !k.unreadable_params.is_empty() {
            let _ = writeln!(s, "  unreadable parameters: {}", k.unreadable_params.join(", "));
        }

        let tp = &self.topology;
        let _ = writeln!(s, "\n[cpus]");
        let _ = writeln!(s, "  online        {}", tp.online_raw.as_deref().unwrap_or("unavailable"));
        let _ = writeln!(s, "  allowed       {}", cpu_list(&tp.allowed));
        let _ = writeln!(s, "  smt active    {}", tp.smt_active.map_or("unavailable", yes_no));
        let _ = writeln!(s, "  isolated      {}", tp.isolated.as_ref().map_or("unavailable".into(), |v| cpu_list(v)));
        let _ = writeln!(
            s,
            "  pinning       {}",
            if tp.pinning.is_empty() { "none".into() } else { format!("{:?}", tp.pinning) }
        );

        let p = &self.power;
        let _ = writeln!(s, "\n[power]");
        if p.cpufreq_present {
            let _ = writeln!(s, "  cpufreq       driver {}", opt(&p.cpufreq_driver));
            for (cpu, g) in &p.governors {
                let _ = writeln!(s, "    cpu{cpu}: {g}");
            }
        } else {
            let _ = writeln!(s, "  cpufreq       none (no /sys/devices/system/cpu/cpu0/cpufreq)");
        }
        let _ = writeln!(s, "  cpuidle       driver {}, governor {}", opt(&p.cpuidle_driver), opt(&p.cpuidle_governor));

        let _ = writeln!(s, "\n[perf]");
        let _ = writeln!(s, "  counters      {}", self.perf.counters);
        let _ = writeln!(s, "  paranoid      {}", opt(&self.perf.paranoid));

        let _ = writeln!(s, "\n[vulnerabilities]");
        match &self.vulnerabilities {
            None => {
                let _ = writeln!(s, "  unavailable (no /sys/devices/system/cpu/vulnerabilities)");
            }
            Some(v) => {
                let width = v.keys().map(String::len).max().unwrap_or(0);
                for (name, text) in v {
                    let _ = writeln!(s, "  {name:width$}  {text}");
                }
            }
        }
        s
    }
}

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// Every readable file of a directory, name -> trimmed content, plus the names that could
/// not be read. None when the directory itself cannot be listed.
fn read_dir_map(dir: &Path) -> Option<(BTreeMap<String, String>, Vec<String>)> {
    let entries = fs::read_dir(dir).ok()?;
    let mut map = BTreeMap::new();
    let mut unreadable = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        match fs::read_to_string(e.path()) {
            Ok(v) => {
                map.insert(name, v.trim().to_string());
            }
            Err(_) => unreadable.push(name),
        }
    }
    unreadable.sort();
    Some((map, unreadable))
}

struct Uname {
    nodename: String,
    release: String,
    version: String,
    machine: String,
}

fn uname() -> Option<Uname> {
    // SAFETY: uname fills the struct we own; the fields are NUL-terminated on success.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return None;
        }
        let field = |f: &[libc::c_char]| std::ffi::CStr::from_ptr(f.as_ptr()).to_string_lossy().into_owned();
        Some(Uname {
            nodename: field(&u.nodename),
            release: field(&u.release),
            version: field(&u.version),
            machine: field(&u.machine),
        })
    }
}

fn total_memory() -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn cpuinfo_field(name: &str) -> Option<String> {
    let text = fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim().to_string())
    })
}

fn hypervisor_signature() -> Option<String> {
    // Only called when the hypervisor bit says a hypervisor defines this leaf.
    let r = raw_cpuid::native_cpuid::cpuid_count(0x4000_0000, 0);
    let bytes: Vec<u8> = [r.ebx, r.ecx, r.edx].iter().flat_map(|w| w.to_le_bytes()).collect();
    // Signatures shorter than 12 bytes are NUL-padded ("KVMKVMKVM\0\0\0").
    let sig = String::from_utf8_lossy(&bytes).replace('\0', "").trim().to_string();
    (!sig.is_empty()).then_some(sig)
}

fn cpu_info() -> CpuInfo {
    let cpuid = raw_cpuid::CpuId::new();
    let features = cpuid.get_feature_info();
    let ext = cpuid.get_extended_processor_and_feature_identifiers();
    let hypervisor = features.as_ref().is_some_and(|f| f.has_hypervisor());
    let vendor = cpuid
        .get_vendor_info()
        .map(|v| v.as_str().to_string())
        .or_else(|| cpuinfo_field("vendor_id"))
        .unwrap_or_else(|| "unknown".into());
    CpuInfo {
        vendor,
        brand: cpuid
            .get_processor_brand_string()
            .map(|b| b.as_str().trim().to_string())
            .or_else(|| cpuinfo_field("model name")),
        family: features.as_ref().map(|f| f.family_id()),
        model: features.as_ref().map(|f| f.model_id()),
        stepping: features.as_ref().map(|f| f.stepping_id()),
        microcode: cpuinfo_field("microcode"),
        flags: CpuFlags {
            vmx: features.as_ref().is_some_and(|f| f.has_vmx()),
            svm: ext.as_ref().is_some_and(|e| e.has_svm()),
            monitor_mwait: features.as_ref().is_some_and(|f| f.has_monitor_mwait()),
            invariant_tsc: cpuid.get_advanced_power_mgmt_info().is_some_and(|a| a.has_invariant_tsc()),
            hypervisor,
            x2apic: features.as_ref().is_some_and(|f| f.has_x2apic()),
            tsc_deadline: features.as_ref().is_some_and(|f| f.has_tsc_deadline()),
        },
        hypervisor_vendor: if hypervisor { hypervisor_signature() } else { None },
        nested: hypervisor,
    }
}

/// The KVM backends, in the order preferred when several are present (the VMM's order:
/// `guest_probes::vmm::host`).
pub const KVM_BACKENDS: [&str; 3] = guest_probes::vmm::host::BACKEND_MODULES;

fn kvm_info() -> KvmInfo {
    // One fact-finder for /dev/kvm and the backend: the VMM's, so that the backend in the
    // manifest is the one the VM probes ran on.
    let host = guest_probes::vmm::host();
    let mut notes = Vec::new();
    let dev_kvm_present = host.dev_present();
    let dev_kvm_error = host.open_error().map(str::to_string);
    let dev_kvm_accessible = dev_kvm_present && dev_kvm_error.is_none();
    let api_version = host.api_version();
    let backends_present: Vec<String> = host.modules().iter().map(|m| m.to_string()).collect();
    let backend = host.backend_kind().ok().map(|k| k.name().to_string()).or_else(|| {
        // no usable /dev/kvm: still name the module the host has, as before
        guest_probes::vmm::host::choose_backend(host.modules(), host.live_modules()).0.map(|k| k.name().to_string())
    });
    if let Some(n) = host.backend_note() {
        notes.push(n.to_string());
    }

    let mut unreadable_params = Vec::new();
    let mut params_of = |module: &str| -> BTreeMap<String, String> {
        match read_dir_map(&Path::new("/sys/module").join(module).join("parameters")) {
            Some((map, bad)) => {
                unreadable_params.extend(bad.into_iter().map(|p| format!("{module}.{p}")));
                map
            }
            None => BTreeMap::new(),
        }
    };
    let backend_params = backend.as_deref().map(&mut params_of).unwrap_or_default();
    let kvm_params = params_of("kvm");
    if backend.is_none() {
        notes.push("no KVM backend module (kvm_intel, kvm_amd, kvm_pvm) in /sys/module".into());
    }

    KvmInfo {
        dev_kvm_present,
        dev_kvm_accessible,
        dev_kvm_error,
        api_version,
        backend,
        backends_present,
        backend_params,
        kvm_params,
        unreadable_params,
        notes,
    }
}

/// Parses the kernel's CPU list format ("0-3,8,10-11"). Malformed parts are skipped.
pub fn parse_cpu_list(text: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    cpus.extend(a..=b);
                }
            }
            None => {
                if let Ok(c) = part.parse() {
                    cpus.push(c);
                }
            }
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

fn topology(pinning: &[usize]) -> Topology {
    let online_raw = read_trimmed("/sys/devices/system/cpu/online");
    Topology {
        online: online_raw.as_deref().map(parse_cpu_list).unwrap_or_default(),
        online_raw,
        allowed: probe_api::cpu::allowed_cpus(),
        smt_active: read_trimmed("/sys/devices/system/cpu/smt/active").and_then(|s| match s.as_str() {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        }),
        isolated: read_trimmed("/sys/devices/system/cpu/isolated").map(|s| parse_cpu_list(&s)),
        pinning: pinning.to_vec(),
    }
}

fn power_info() -> PowerInfo {
    let cpufreq_present = Path::new("/sys/devices/system/cpu/cpu0/cpufreq").exists();
    let mut governors = BTreeMap::new();
    if cpufreq_present {
        let online = read_trimmed("/sys/devices/system/cpu/online").map(|s| parse_cpu_list(&s)).unwrap_or_default();
        for cpu in online {
            if let Some(g) = read_trimmed(format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor")) {
                governors.insert(cpu, g);
            }
        }
    }
    PowerInfo {
        cpufreq_present,
        cpufreq_driver: if cpufreq_present {
            read_trimmed("/sys/devices/system/cpu/cpu0/cpufreq/scaling_driver")
        } else {
            None
        },
        governors,
        cpuidle_driver: read_trimmed("/sys/devices/system/cpu/cpuidle/current_driver"),
        cpuidle_governor: read_trimmed("/sys/devices/system/cpu/cpuidle/current_governor")
            .or_else(|| read_trimmed("/sys/devices/system/cpu/cpuidle/current_governor_ro")),
    }
}

fn perf_info() -> PerfInfo {
    use perf_event::events::{Hardware, Software};
    use perf_event::Builder;

    // Opening the counter is the test: it fails with ENOENT where no PMU is exposed
    // (common in guests), which is exactly the fact worth recording.
    let hw = Builder::new(Hardware::CPU_CYCLES).build().map(drop);
    let counters = match hw {
        Ok(()) => PerfAvailability::Hardware,
        Err(hw_err) => match Builder::new(Software::TASK_CLOCK).build().map(drop) {
            Ok(()) => PerfAvailability::SoftwareOnly { hardware_error: hw_err.to_string() },
            Err(sw_err) => {
                PerfAvailability::None { hardware_error: hw_err.to_string(), software_error: sw_err.to_string() }
            }
        },
    };
    PerfInfo { counters, paranoid: read_trimmed("/proc/sys/kernel/perf_event_paranoid").and_then(|s| s.parse().ok()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_and_print() {
        assert_eq!(parse_cpu_list("0-3,8,10-11\n"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpu_list(""), Vec::<usize>::new());
        assert_eq!(parse_cpu_list("x,2"), vec![2]);
        assert_eq!(cpu_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(cpu_list(&[]), "none");
    }

    #[test]
    fn perf_availability_text() {
        assert_eq!(PerfAvailability::Hardware.to_string(), "hardware");
        let s = PerfAvailability::SoftwareOnly { hardware_error: "No such file".into() };
        assert_eq!(s.to_string(), "software only: No such file");
    }
}
