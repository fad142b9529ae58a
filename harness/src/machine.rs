//! The machine class: what decides whether two runs' figures may be compared at all.
//! Derived from a run's stored fingerprint alone (so old runs get one too), in one
//! function that baselines, compare, the gate, the history and publish all call.
//!
//! Two runs of one class ran on the same KVM backend, CPU vendor, family and model, with
//! the same number of online CPUs. Everything else in the fingerprint (kernel build, TSC
//! rate, microcode) is reported beside the verdicts but does not split classes: those
//! move between otherwise identical machines of this project's pool.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::store::Manifest;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MachineClass {
    /// kvm_intel, kvm_amd, kvm_pvm, or `nokvm`.
    pub backend: String,
    /// intel, amd, or the raw CPUID vendor string lower-cased.
    pub vendor: String,
    pub family: Option<u64>,
    pub model: Option<u64>,
    pub cpus: usize,
}

impl MachineClass {
    /// The class of a fingerprint as stored in a manifest.
    pub fn of_fingerprint(fp: &Value) -> MachineClass {
        let s = |ptr: &str| fp.pointer(ptr).and_then(Value::as_str).map(str::to_string);
        let vendor = match s("/cpu/vendor").as_deref() {
            Some("GenuineIntel") => "intel".to_string(),
            Some("AuthenticAMD") => "amd".to_string(),
            Some(other) => other.to_ascii_lowercase().chars().filter(char::is_ascii_alphanumeric).collect(),
            None => "unknown".to_string(),
        };
        MachineClass {
            backend: s("/kvm/backend").unwrap_or_else(|| "nokvm".into()),
            vendor,
            family: fp.pointer("/cpu/family").and_then(Value::as_u64),
            model: fp.pointer("/cpu/model").and_then(Value::as_u64),
            cpus: fp.pointer("/topology/online").and_then(Value::as_array).map(Vec::len).unwrap_or(0),
        }
    }

    pub fn of(m: &Manifest) -> MachineClass {
        Self::of_fingerprint(&m.fingerprint)
    }

    /// The folder name under `results/baselines/`, e.g. `kvm_pvm-amd-25-17-2cpu`.
    pub fn name(&self) -> String {
        let n = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_else(|| "x".into());
        format!("{}-{}-{}-{}-{}cpu", self.backend, self.vendor, n(self.family), n(self.model), self.cpus)
    }
}

impl fmt::Display for MachineClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Why a run's figures come from an emulated CPU, if they do: the emulated test rig
/// records it (IVBENCH_EMULATED), and an emulator's CPU names itself.
pub fn emulated(m: &Manifest) -> Option<String> {
    if let Some(v) = m.discovered.get("emulated").and_then(Value::as_str) {
        return Some(v.to_string());
    }
    let brand = m.fingerprint.pointer("/cpu/brand").and_then(Value::as_str).unwrap_or("");
    ["QEMU", "Bochs", "TCG"].iter().find(|w| brand.contains(*w)).map(|w| format!("the CPU names itself {w} ({brand})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn class_names_come_from_backend_vendor_model_and_cpus() {
        let fp = json!({"cpu": {"vendor": "AuthenticAMD", "family": 25, "model": 17, "brand": "AMD EPYC"},
                        "kvm": {"backend": "kvm_pvm"}, "topology": {"online": [0, 1]}});
        assert_eq!(MachineClass::of_fingerprint(&fp).name(), "kvm_pvm-amd-25-17-2cpu");
        let xeon = json!({"cpu": {"vendor": "GenuineIntel", "family": 6, "model": 207}, "kvm": {"backend": "kvm_pvm"}, "topology": {"online": [0, 1]}});
        assert_ne!(MachineClass::of_fingerprint(&fp), MachineClass::of_fingerprint(&xeon));
        // A kernel or TSC-rate change alone does not make another class.
        let mut fp2 = fp.clone();
        fp2["host"] = json!({"kernel_release": "other"});
        fp2["tsc"] = json!({"khz": 1});
        assert_eq!(MachineClass::of_fingerprint(&fp), MachineClass::of_fingerprint(&fp2));
        assert_eq!(MachineClass::of_fingerprint(&json!({})).name(), "nokvm-unknown-x-x-0cpu");
    }
}
