//! The path block of one end of a packet path (`payloads::path`): the parameters, the
//! length tables and the frame templates a worker writes at [`layout::PATH_BLOCK`] before
//! its vCPU runs `path_gen` or `path_sink`, and the counters it reads back afterwards.
//! Pure functions of the job, so that the arithmetic (fixed-point pacing, strides, the
//! IMIX cycle) is tested without a VM.

use std::collections::BTreeMap;

use packet_ring::frame::{FrameSize, Template, IMIX_CYCLE};
use serde::{Deserialize, Serialize};

use crate::abi::path as p;
use crate::vmm::layout;

/// How the two ends notify each other (the values of `abi::path::NOTIFY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Notify {
    /// Both ends spin; no exit per packet.
    Poll,
    /// The sink polls for a while, then arms its wake-up and halts; the generator kicks
    /// only a sleeping sink (ioeventfd -> irqfd).
    Hybrid,
    /// The sink halts as soon as the ring is empty; kicked as in hybrid.
    Halt,
    /// The generator exits to its VMM after every publication; the VMM signals a
    /// sleeping sink (the mediated, vhost-like path).
    Exit,
}

impl Notify {
    pub fn parse(text: &str) -> Result<Notify, String> {
        match text {
            "poll" => Ok(Notify::Poll),
            "hybrid" => Ok(Notify::Hybrid),
            "halt" => Ok(Notify::Halt),
            "exit" => Ok(Notify::Exit),
            other => Err(format!("notify must be poll, hybrid, halt, exit or mwait, got `{other}`")),
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Notify::Poll => "poll",
            Notify::Hybrid => "hybrid",
            Notify::Halt => "halt",
            Notify::Exit => "exit",
        }
    }
    pub fn word(self) -> u64 {
        match self {
            Notify::Poll => p::NOTIFY_POLL,
            Notify::Hybrid => p::NOTIFY_HYBRID,
            Notify::Halt => p::NOTIFY_HALT,
            Notify::Exit => p::NOTIFY_EXIT,
        }
    }
    /// Whether the sink may halt (and so needs an interrupt to wake it).
    pub fn sink_sleeps(self) -> bool {
        self != Notify::Poll
    }
}

/// Frame sizes as they cross the worker protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Size {
    Fixed(u16),
    Imix,
}

impl From<FrameSize> for Size {
    fn from(s: FrameSize) -> Size {
        match s {
            FrameSize::Fixed(n) => Size::Fixed(n),
            FrameSize::Imix => Size::Imix,
        }
    }
}

impl Size {
    /// The generator's length cycle.
    pub fn cycle(self) -> Vec<u16> {
        match self {
            Size::Fixed(n) => vec![n],
            Size::Imix => IMIX_CYCLE.to_vec(),
        }
    }
    /// The distinct lengths, in first-seen order.
    pub fn kinds(self) -> Vec<u16> {
        let mut v: Vec<u16> = Vec::new();
        for l in self.cycle() {
            if !v.contains(&l) {
                v.push(l);
            }
        }
        v
    }
}

/// One end of a path as the parent describes it to the worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathEnd {
    /// GPAs of the ring region and of the control lines, in the worker's VM.
    pub ring_gpa: u64,
    pub ctrl_gpa: u64,
    pub slots: u32,
    pub batch: u32,
    pub size: Size,
    pub notify: Notify,
    pub kick_port: u16,
    /// Hybrid: how long the sink keeps polling an empty ring before it halts.
    pub poll_ns: u64,
    /// Generator: packets to offer at most, and for how long (0: no time limit).
    pub limit: u64,
    pub duration_ns: u64,
    /// Generator: the offered rate; None offers as fast as it can.
    pub rate_mpps: Option<f64>,
    /// Sink: every `stride`-th sequence number's latency is sampled (a power of two).
    pub stride: u64,
    pub max_samples: u64,
    pub zero_copy: bool,
    /// Sink: the received-count mark interval.
    pub mark_ns: u64,
    /// Sink: a pause after each poll that found frames (0: none; fault tests).
    #[serde(default)]
    pub sink_delay_ns: u64,
    /// The extra fd (eventfd) of this end's ring: the sink wakes on it, the generator
    /// kicks it.
    #[serde(default)]
    pub eventfd: usize,
    /// Generator, transport=vmfunc: the VMFUNC view (kvm-patch) through which it reaches
    /// the ring, which its VM then has no memslot for; 0: the ring is a memslot.
    #[serde(default)]
    pub view: u32,
}

/// One port of a middle box: the ring it takes frames from (if any), the ring it sends
/// frames to (if any) and the MAC of the VM behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FwdPort {
    /// (ring GPA, control lines GPA, eventfd index the box wakes on)
    pub input: Option<(u64, u64, usize)>,
    /// (ring GPA, control lines GPA, kick port, eventfd index of its consumer)
    pub output: Option<(u64, u64, u16, usize)>,
    /// The MAC frames for this port carry as their destination.
    pub mac: [u8; 6],
}

/// A middle box (`path_fwd`): the switch of path.b, a box of path.chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FwdSpec {
    pub ports: Vec<FwdPort>,
    pub slots: u32,
    pub batch: u32,
    pub notify: Notify,
    pub poll_ns: u64,
    pub stride: u64,
    pub max_samples: u64,
    /// The source MAC the box writes into every frame it forwards.
    pub src_mac: [u8; 6],
}

/// A MAC as the little-endian low 48 bits of a word (how the guest reads it).
pub fn mac_word(mac: [u8; 6]) -> u64 {
    let mut w = [0u8; 8];
    w[..6].copy_from_slice(&mac);
    u64::from_le_bytes(w)
}

/// The forwarder block of `spec` (global words and port records; counters zero).
pub fn build_fwd(spec: &FwdSpec, tsc_khz: u64, vif: u64) -> Result<Vec<u8>, String> {
    use crate::abi::fwd as f;
    if spec.ports.is_empty() || spec.ports.len() as u64 > f::MAX_PORTS {
        return Err(format!("{} ports; a middle box has 1..={}", spec.ports.len(), f::MAX_PORTS));
    }
    if !spec.stride.is_power_of_two() {
        return Err(format!("latency stride {} is not a power of two", spec.stride));
    }
    let ring = packet_ring::Layout::new(spec.slots)?;
    let (_, sample_cap) = layout::samples(0);
    let mut b = vec![0u8; (f::PORTS + spec.ports.len() as u64 * f::PORT_SIZE) as usize];
    let mut put = |off: u64, v: u64| b[off as usize..off as usize + 8].copy_from_slice(&v.to_le_bytes());
    put(f::NPORTS, spec.ports.len() as u64);
    put(f::BATCH, u64::from(spec.batch.max(1)));
    put(f::NOTIFY, spec.notify.word());
    put(f::POLL_CYCLES, cycles(spec.poll_ns, tsc_khz));
    put(f::VIF, vif);
    put(f::STRIDE_MASK, spec.stride - 1);
    put(f::MAX_SAMPLES, spec.max_samples.min(sample_cap));
    put(f::SRC_MAC, mac_word(spec.src_mac));
    for (i, port) in spec.ports.iter().enumerate() {
        let at = f::PORTS + i as u64 * f::PORT_SIZE;
        if let Some((ring_gpa, ctrl_gpa, _)) = port.input {
            put(at + f::P_IN_RING, ring_gpa);
            put(at + f::P_IN_CTRL, ctrl_gpa);
            put(at + f::P_IN_MASK, u64::from(spec.slots - 1));
            put(at + f::P_IN_BUF_LO, ring.buf_offset as u64);
            put(at + f::P_IN_BUF_HI, ring.region_size as u64);
        }
        if let Some((ring_gpa, ctrl_gpa, kick, _)) = port.output {
            put(at + f::P_OUT_RING, ring_gpa);
            put(at + f::P_OUT_CTRL, ctrl_gpa);
            put(at + f::P_OUT_MASK, u64::from(spec.slots - 1));
            put(at + f::P_OUT_BUF_LO, ring.buf_offset as u64);
            put(at + f::P_KICK_PORT, u64::from(kick));
        }
        put(at + f::P_MAC, mac_word(port.mac));
    }
    Ok(b)
}

/// The forwarder's counters by name: the global ones (`POLLS`, ...) and each port's
/// (`PORT0_RX`, `PORT1_DROP_FULL`, ...), from the block's words starting at offset 0.
pub fn fwd_counters(words: &[u64], ports: usize) -> BTreeMap<String, u64> {
    use crate::abi::fwd as f;
    let word = |off: u64| words.get((off / 8) as usize).copied();
    let mut m = BTreeMap::new();
    for (sym, off) in f::ASM {
        let name = sym.trim_start_matches("IVB_FWD_");
        if !name.starts_with("P_") && (f::POLLS..f::S_PREV).contains(off) {
            if let Some(w) = word(*off) {
                m.insert(name.to_string(), w);
            }
        }
        if name.starts_with("P_") && (f::P_RX..=f::P_IN_DONE).contains(off) {
            for p in 0..ports {
                if let Some(w) = word(f::PORTS + p as u64 * f::PORT_SIZE + off) {
                    m.insert(format!("PORT{p}_{}", &name[2..]), w);
                }
            }
        }
    }
    m
}

/// Words of a forwarder block with `ports` ports.
pub fn fwd_words(ports: usize) -> usize {
    use crate::abi::fwd as f;
    ((f::PORTS + ports as u64 * f::PORT_SIZE) / 8) as usize
}

/// TSC cycles of `ns` nanoseconds at `tsc_khz`.
fn cycles(ns: u64, tsc_khz: u64) -> u64 {
    (u128::from(ns) * u128::from(tsc_khz) / 1_000_000) as u64
}

/// The pacing interval in TSC cycles x 65536 (0 for "as fast as it can").
pub fn interval_fp(rate_mpps: Option<f64>, tsc_khz: u64) -> u64 {
    match rate_mpps {
        None => 0,
        Some(m) => ((tsc_khz as f64 * 1e3 / (m * 1e6)) * 65536.0).round().max(1.0) as u64,
    }
}

/// The block's first [`p::MARKS`] bytes for one end: parameters, tables and templates
/// (counters and scratch words zero). `vif` is the VIF page or 0.
pub fn build(end: &PathEnd, tsc_khz: u64, vif: u64) -> Result<Vec<u8>, String> {
    if !end.slots.is_power_of_two() {
        return Err(format!("ring slots {} are not a power of two", end.slots));
    }
    let ring = packet_ring::Layout::new(end.slots)?;
    let kinds = end.size.kinds();
    if kinds.len() as u64 > p::MAX_TEMPLATES {
        return Err(format!("{} frame lengths; the path block holds {}", kinds.len(), p::MAX_TEMPLATES));
    }
    if !end.stride.is_power_of_two() {
        return Err(format!("latency stride {} is not a power of two", end.stride));
    }
    let (_, sample_cap) = layout::samples(0);
    let mut b = vec![0u8; p::MARKS as usize];
    let mut put = |off: u64, v: u64| b[off as usize..off as usize + 8].copy_from_slice(&v.to_le_bytes());
    put(p::RING, end.ring_gpa);
    put(p::CTRL, end.ctrl_gpa);
    put(p::MASK, u64::from(end.slots - 1));
    put(p::BATCH, u64::from(end.batch.max(1)));
    put(p::LIMIT, end.limit);
    put(p::INTERVAL, interval_fp(end.rate_mpps, tsc_khz));
    put(p::DURATION, cycles(end.duration_ns, tsc_khz));
    put(p::NOTIFY, end.notify.word());
    put(p::KICK_PORT, u64::from(end.kick_port));
    put(p::POLL_CYCLES, cycles(end.poll_ns, tsc_khz));
    put(p::STRIDE_MASK, end.stride - 1);
    put(p::MAX_SAMPLES, end.max_samples.min(sample_cap));
    put(p::ZERO_COPY, u64::from(end.zero_copy));
    put(p::VIF, vif);
    put(p::BUF_LO, ring.buf_offset as u64);
    put(p::BUF_HI, ring.region_size as u64);
    put(p::MARK_CYCLES, cycles(end.mark_ns, tsc_khz).max(1));
    put(p::SINK_DELAY, cycles(end.sink_delay_ns, tsc_khz));
    put(p::VIEW, u64::from(end.view));
    let templates: Vec<(u16, u64, Template)> = kinds
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let gpa = layout::PATH_BLOCK + p::TEMPLATES + i as u64 * p::TEMPLATE_STRIDE;
            (len, gpa, Template::new(usize::from(len)))
        })
        .collect();
    let entry = |len: u16| templates.iter().find(|t| t.0 == len).expect("every length has a template");
    let cycle = end.size.cycle();
    put(p::NCYCLE, cycle.len() as u64);
    for (i, &len) in cycle.iter().enumerate() {
        let (_, gpa, t) = entry(len);
        let at = p::CYCLE + i as u64 * p::ENTRY_SIZE;
        put(at + p::ENTRY_TEMPLATE, *gpa);
        put(at + p::ENTRY_LEN, u64::from(len));
        put(at + p::ENTRY_BASE, t.base);
    }
    put(p::NKINDS, templates.len() as u64);
    for (i, (len, gpa, t)) in templates.iter().enumerate() {
        let at = p::KINDS + i as u64 * p::ENTRY_SIZE;
        put(at + p::ENTRY_TEMPLATE, *gpa);
        put(at + p::ENTRY_LEN, u64::from(*len));
        put(at + p::ENTRY_BASE, t.base);
    }
    for (i, (_, _, t)) in templates.iter().enumerate() {
        let at = (p::TEMPLATES + i as u64 * p::TEMPLATE_STRIDE) as usize;
        b[at..at + t.bytes.len()].copy_from_slice(&t.bytes);
    }
    Ok(b)
}

/// The counter words of the block (offsets from [`p::SENT`] up to the scratch words), by
/// name (`SENT`, `RECEIVED`, ...), from the block's words starting at offset 0.
pub fn counters(words: &[u64]) -> BTreeMap<String, u64> {
    p::ASM
        .iter()
        .filter(|(sym, off)| (p::SENT..p::S_PREV).contains(off) && !sym.starts_with("IVB_PATH_S_"))
        .filter_map(|(sym, off)| {
            let name = sym.trim_start_matches("IVB_PATH_").to_string();
            words.get((*off / 8) as usize).map(|w| (name, *w))
        })
        .collect()
}

/// Words of the block [`counters`] needs.
pub const COUNTER_WORDS: usize = (p::S_PREV / 8) as usize;

#[cfg(test)]
mod tests {
    use super::*;

    fn word(b: &[u8], off: u64) -> u64 {
        u64::from_le_bytes(b[off as usize..off as usize + 8].try_into().unwrap())
    }

    fn end(size: Size) -> PathEnd {
        PathEnd {
            ring_gpa: layout::SHARED_GPA,
            ctrl_gpa: layout::SHARED_GPA + 0x10_0000,
            slots: 256,
            batch: 32,
            size,
            notify: Notify::Hybrid,
            kick_port: 0xf8,
            poll_ns: 50_000,
            limit: 1000,
            duration_ns: 1_000_000_000,
            rate_mpps: Some(1.0),
            stride: 16,
            max_samples: 100,
            zero_copy: true,
            mark_ns: 10_000_000,
            sink_delay_ns: 0,
            eventfd: 0,
            view: 0,
        }
    }

    #[test]
    fn parameters_land_in_their_words_in_tsc_cycles() {
        let b = build(&end(Size::Fixed(64)), 2_000_000, 0x8000).unwrap();
        assert_eq!(word(&b, p::MASK), 255);
        assert_eq!(word(&b, p::BATCH), 32);
        // 1 Mpps at 2 GHz: 2000 cycles between packets, x 65536
        assert_eq!(word(&b, p::INTERVAL), 2000 * 65536);
        assert_eq!(word(&b, p::DURATION), 2_000_000_000);
        assert_eq!(word(&b, p::POLL_CYCLES), 100_000);
        assert_eq!(word(&b, p::MARK_CYCLES), 20_000_000);
        assert_eq!(word(&b, p::NOTIFY), p::NOTIFY_HYBRID);
        assert_eq!(word(&b, p::STRIDE_MASK), 15);
        assert_eq!(word(&b, p::ZERO_COPY), 1);
        assert_eq!(word(&b, p::VIF), 0x8000);
        let ring = packet_ring::Layout::new(256).unwrap();
        assert_eq!((word(&b, p::BUF_LO), word(&b, p::BUF_HI)), (ring.buf_offset as u64, ring.region_size as u64));
        assert_eq!(word(&b, p::SENT), 0, "counters start at zero");
        assert_eq!(interval_fp(None, 2_000_000), 0);
        // fractional intervals keep their fraction: 14.88 Mpps at 2.1 GHz = 141.13 cycles
        let fp = interval_fp(Some(14.88), 2_100_000);
        assert!((fp as f64 / 65536.0 - 141.129).abs() < 0.01, "{fp}");
    }

    #[test]
    fn templates_and_tables_match_the_host_frames() {
        let b = build(&end(Size::Imix), 1_000_000, 0).unwrap();
        assert_eq!(word(&b, p::NCYCLE), 12);
        assert_eq!(word(&b, p::NKINDS), 3);
        let cycle: Vec<u64> = (0..12).map(|i| word(&b, p::CYCLE + i * p::ENTRY_SIZE + p::ENTRY_LEN)).collect();
        assert_eq!(cycle, IMIX_CYCLE.iter().map(|&l| u64::from(l)).collect::<Vec<_>>());
        for i in 0..3 {
            let at = p::KINDS + i * p::ENTRY_SIZE;
            let len = word(&b, at + p::ENTRY_LEN) as usize;
            let gpa = word(&b, at + p::ENTRY_TEMPLATE);
            let off = (gpa - layout::PATH_BLOCK) as usize;
            let t = Template::new(len);
            assert_eq!(&b[off..off + len], &t.bytes[..], "template of {len} B");
            assert_eq!(word(&b, at + p::ENTRY_BASE), t.base);
        }
    }

    #[test]
    fn bad_ends_are_refused() {
        let mut e = end(Size::Fixed(64));
        e.slots = 100;
        assert!(build(&e, 1_000_000, 0).is_err());
        let mut e = end(Size::Fixed(64));
        e.stride = 3;
        assert!(build(&e, 1_000_000, 0).is_err());
    }

    #[test]
    fn counters_are_named_by_the_abi() {
        let mut words = vec![0u64; COUNTER_WORDS];
        words[(p::SENT / 8) as usize] = 7;
        words[(p::RECEIVED / 8) as usize] = 5;
        let c = counters(&words);
        assert_eq!(c["SENT"], 7);
        assert_eq!(c["RECEIVED"], 5);
        assert!(c.contains_key("NMARKS") && !c.contains_key("S_PREV") && !c.contains_key("RING"));
        assert!(c.contains_key("VIEW_ENTRIES") && !c.contains_key("S_IN_VIEW"));
    }

    #[test]
    fn forwarder_ports_land_in_their_records() {
        use crate::abi::fwd as f;
        let spec = FwdSpec {
            ports: vec![
                FwdPort { input: Some((0x1000_0000, 0x1070_0000, 0)), output: None, mac: [2, 0, 0, 0, 0, 1] },
                FwdPort { input: None, output: Some((0x1010_0000, 0x1070_0080, 0xf9, 1)), mac: [2, 0, 0, 0, 0, 2] },
            ],
            slots: 256,
            batch: 32,
            notify: Notify::Halt,
            poll_ns: 1000,
            stride: 8,
            max_samples: 10,
            src_mac: [2, 0, 0, 0, 0, 1],
        };
        let b = build_fwd(&spec, 1_000_000, 0).unwrap();
        let p1 = f::PORTS + f::PORT_SIZE;
        assert_eq!(word(&b, f::NPORTS), 2);
        assert_eq!(word(&b, f::PORTS + f::P_IN_RING), 0x1000_0000);
        assert_eq!(word(&b, f::PORTS + f::P_OUT_RING), 0, "port 0 sends nowhere");
        assert_eq!(word(&b, p1 + f::P_IN_RING), 0, "port 1 takes nothing in");
        assert_eq!((word(&b, p1 + f::P_OUT_RING), word(&b, p1 + f::P_KICK_PORT)), (0x1010_0000, 0xf9));
        // the guest compares the low 48 bits of the frame's first word with this
        let frame = packet_ring::frame::Template::new(64);
        let first = u64::from_le_bytes(frame.bytes[..8].try_into().unwrap());
        assert_eq!(word(&b, p1 + f::P_MAC) << 16, first << 16, "port 1 is the frames' destination");
        let words: Vec<u64> = b.chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
        let c = fwd_counters(&words, 2);
        assert!(c.contains_key("PORT1_DROP_FULL") && c.contains_key("POLLS") && !c.contains_key("S_PREV"));
        assert!(build_fwd(&FwdSpec { ports: vec![], ..spec }, 1_000_000, 0).is_err());
    }

    #[test]
    fn notify_modes_parse() {
        for m in [Notify::Poll, Notify::Hybrid, Notify::Halt, Notify::Exit] {
            assert_eq!(Notify::parse(m.label()), Ok(m));
        }
        assert!(Notify::parse("napi").is_err());
        assert!(!Notify::Poll.sink_sleeps() && Notify::Exit.sink_sleeps());
    }
}
