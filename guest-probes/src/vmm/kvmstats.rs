//! KVM's binary statistics of a vCPU (KVM_GET_STATS_FD, Linux 5.14+): the halt-polling
//! counters that explain what a "wait in HLT" figure measured.
//!
//! Layout (include/uapi/linux/kvm.h): a header {flags, name_size, num_desc, id_offset,
//! desc_offset, data_offset} (u32 each); `num_desc` descriptors of 16 bytes {flags u32,
//! exponent i16, size u16, offset u32, bucket_size u32} followed by `name_size` name bytes;
//! values are u64 arrays at `data_offset + desc.offset`.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

use kvm_ioctls::VcpuFd;

/// `_IO(KVMIO, 0xce)`
const KVM_GET_STATS_FD: libc::c_ulong = 0xaece;

/// The scalar (size 1) statistics of a vCPU, by name.
pub fn vcpu_stats(vcpu: &VcpuFd) -> Result<BTreeMap<String, u64>, String> {
    // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd or -1.
    let fd = unsafe { libc::ioctl(vcpu.as_raw_fd(), KVM_GET_STATS_FD, 0) };
    if fd < 0 {
        return Err(format!("KVM_GET_STATS_FD: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a new file descriptor owned here.
    let f = unsafe { File::from_raw_fd(fd) };
    let mut h = [0u8; 24];
    f.read_exact_at(&mut h, 0).map_err(|e| format!("stats header: {e}"))?;
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let (name_size, num_desc, desc_offset, data_offset) =
        (u32_at(&h, 4), u32_at(&h, 8), u32_at(&h, 16), u32_at(&h, 20));
    if name_size > 4096 || num_desc > 4096 {
        return Err(format!("implausible stats header: name_size {name_size}, num_desc {num_desc}"));
    }
    let dsize = 16 + name_size as usize;
    let mut descs = vec![0u8; dsize * num_desc as usize];
    f.read_exact_at(&mut descs, u64::from(desc_offset)).map_err(|e| format!("stats descriptors: {e}"))?;
    let mut out = BTreeMap::new();
    for d in descs.chunks_exact(dsize) {
        let size = u16::from_le_bytes([d[6], d[7]]);
        let offset = u32_at(d, 8);
        if size != 1 {
            continue; // histograms
        }
        let name: String = d[16..].iter().take_while(|&&b| b != 0).map(|&b| b as char).collect();
        let mut v = [0u8; 8];
        f.read_exact_at(&mut v, u64::from(data_offset) + u64::from(offset)).map_err(|e| format!("stat {name}: {e}"))?;
        out.insert(name, u64::from_le_bytes(v));
    }
    Ok(out)
}

/// The halt-related counters, `after - before`.
pub fn halt_delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter(|(k, _)| k.starts_with("halt"))
        .map(|(k, v)| (k.clone(), v.wrapping_sub(before.get(k).copied().unwrap_or(0))))
        .collect()
}

/// `after - before` for `names` (those present), in that order.
pub fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, names: &[&str]) -> Vec<(String, u64)> {
    names
        .iter()
        .filter_map(|n| after.get(*n).map(|a| (n.to_string(), a.wrapping_sub(before.get(*n).copied().unwrap_or(0)))))
        .collect()
}

/// One line for notes: "halt_exits 1000, halt_attempted_poll 1000, halt_successful_poll 990, ..."
pub fn halt_summary(delta: &BTreeMap<String, u64>) -> String {
    const ORDER: [&str; 5] =
        ["halt_exits", "halt_attempted_poll", "halt_successful_poll", "halt_poll_invalid", "halt_wakeup"];
    let mut parts: Vec<String> = ORDER.iter().filter_map(|k| delta.get(*k).map(|v| format!("{k} {v}"))).collect();
    if parts.is_empty() {
        parts.push("no halt counters".into());
    }
    parts.join(", ")
}
