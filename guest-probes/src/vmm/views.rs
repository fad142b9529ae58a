//! VMFUNC protected memory views: the API of ivbench's kvm-patch
//! (`kvm-patch/include/uapi/asm/kvm_vmfunc.h`), mirrored here and nowhere else.
//!
//! A patched `kvm_intel` lets a VM that enabled views switch from its default view (KVM's
//! own EPT) into a *view* (a small EPT hierarchy built only from pages the VMM approved)
//! and back with `VMFUNC` leaf 0, without a VM exit. Every command is the VM ioctl
//! `KVM_MEMORY_ENCRYPT_OP` with a [`Cmd`] whose first word is [`uapi::MAGIC`]; a stock
//! kvm_intel or kvm_pvm answers `ENOTTY` (a kvm_amd with SEV reads the struct as its own
//! command and answers `EINVAL`: "unusable", never reached past the backend's check).
//!
//! What a host can do is decided in this order (each step's failure is an
//! `unsupported: <reason>`, see [`host_support`] and [`check_query`]): the module parameter
//! `vmfunc_views` exists and reads `Y`; QUERY answers version 1 with the HW flag; ENABLE
//! before the first vCPU. The `tests` tie every constant and struct layout to the header.

use std::fmt;

use kvm_ioctls::VmFd;
use vmm_sys_util::errno;

/// The constants of `asm/kvm_vmfunc.h` (same names without the `KVM_VMFUNC_` / `KVM_`
/// prefix).
pub mod uapi {
    pub const MAGIC: u32 = 0x5656_4d46;
    pub const API_VERSION: u32 = 1;

    pub const QUERY: u32 = 0;
    pub const ENABLE: u32 = 1;
    pub const VIEW_CREATE: u32 = 2;
    pub const VIEW_MAP: u32 = 3;
    pub const VIEW_PUBLISH: u32 = 4;
    pub const VIEW_DESTROY: u32 = 5;
    pub const VCPU_STATS: u32 = 6;

    pub const MAX_VIEW: u32 = 511;
    pub const MAX_VIEW_PAGES: u32 = 4096;

    pub const PERM_R: u32 = 1 << 0;
    pub const PERM_W: u32 = 1 << 1;
    pub const PERM_X: u32 = 1 << 2;

    pub const QUERY_HW: u32 = 1 << 0;
    pub const QUERY_ENABLED: u32 = 1 << 1;

    /// Bit of EAX in KVM's CPUID leaf 0x40000001 (`KVM_FEATURE_VMFUNC_VIEWS`).
    pub const FEATURE_VMFUNC_VIEWS: u32 = 28;
    /// `KVM_HC_VMFUNC_VIEW_QUERY`: RAX = this, RBX = tag; returns the view index.
    pub const HC_VMFUNC_VIEW_QUERY: u64 = 0x5656_4d01;
    /// `KVM_ENOENT_VIEW`: the hypercall returns its negative for an unknown tag.
    pub const ENOENT_VIEW: i64 = 2;

    /// KVM's CPUID feature leaf (`KVM_CPUID_FEATURES`), where the VMM sets the bit.
    pub const KVM_CPUID_FEATURES: u32 = 0x4000_0001;
}

/// Where the patched module says whether views are available.
pub const MODULE_PARAM: &str = "/sys/module/kvm_intel/parameters/vmfunc_views";

/// `struct kvm_vmfunc_query`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pub version: u32,
    pub flags: u32,
    pub max_view: u32,
    pub max_view_pages: u32,
}

/// `struct kvm_vmfunc_view`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct View {
    pub index: u32,
    pub pad: u32,
    pub tag: u64,
}

/// `struct kvm_vmfunc_map`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Map {
    pub index: u32,
    pub perm: u32,
    pub gpa: u64,
    pub uaddr: u64,
    pub npages: u64,
}

/// `struct kvm_vmfunc_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub vcpu_id: u32,
    pub current_view: u32,
    pub vmfunc_ud: u64,
    pub view_faults: u64,
    pub forced_default: u64,
}

/// The anonymous union of `struct kvm_vmfunc_cmd`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union CmdBody {
    pub query: Query,
    pub view: View,
    pub map: Map,
    pub stats: Stats,
    pub pad: [u8; 64],
}

/// `struct kvm_vmfunc_cmd` (80 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Cmd {
    pub magic: u32,
    pub cmd: u32,
    pub flags: u64,
    pub body: CmdBody,
}

const _: () = assert!(std::mem::size_of::<Cmd>() == 80);

impl Cmd {
    fn new(cmd: u32) -> Cmd {
        Cmd { magic: uapi::MAGIC, cmd, flags: 0, body: CmdBody { pad: [0; 64] } }
    }
}

/// The main-memory pages a view needs so that guest code at `code` (gpa, len) runs in it
/// at the same addresses: `(gpa, len, perm)`. The page tables of the identity map (the
/// CPU walks them in the view; read/write because it may set accessed and dirty bits;
/// they are the guest's own pages, nothing it could not write anyway) and the code pages
/// (read+execute: KVM copies them, so nothing can change them in the view).
pub fn trampoline_pages(code: (u64, u64)) -> Vec<(u64, u64, u32)> {
    use crate::vmm::layout::{PD0, PDPT, PML4};
    const PAGE: u64 = 0x1000;
    let (gpa, len) = code;
    let first = gpa / PAGE * PAGE;
    let end = (gpa + len.max(1)).div_ceil(PAGE) * PAGE;
    let rw = uapi::PERM_R | uapi::PERM_W;
    vec![(PML4, PAGE, rw), (PDPT, PAGE, rw), (PD0, PAGE, rw), (first, end - first, uapi::PERM_R | uapi::PERM_X)]
}

/// Name of a command, for error messages.
pub fn cmd_name(cmd: u32) -> &'static str {
    match cmd {
        uapi::QUERY => "KVM_VMFUNC_QUERY",
        uapi::ENABLE => "KVM_VMFUNC_ENABLE",
        uapi::VIEW_CREATE => "KVM_VMFUNC_VIEW_CREATE",
        uapi::VIEW_MAP => "KVM_VMFUNC_VIEW_MAP",
        uapi::VIEW_PUBLISH => "KVM_VMFUNC_VIEW_PUBLISH",
        uapi::VIEW_DESTROY => "KVM_VMFUNC_VIEW_DESTROY",
        uapi::VCPU_STATS => "KVM_VMFUNC_VCPU_STATS",
        _ => "KVM_VMFUNC_?",
    }
}

/// A failed command: which one, and the errno.
#[derive(Clone, Copy, Debug)]
pub struct CmdError {
    pub cmd: u32,
    pub errno: errno::Error,
}

impl fmt::Display for CmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KVM_MEMORY_ENCRYPT_OP({}): {}", cmd_name(self.cmd), self.errno)
    }
}

fn issue(vm: &VmFd, mut c: Cmd) -> Result<Cmd, CmdError> {
    let cmd = c.cmd;
    // SAFETY: `c` is a valid, initialised `struct kvm_vmfunc_cmd` (layout tied to the
    // header by the tests) that lives across the call; the kernel reads and writes at most
    // its 80 bytes (kvm_amd's SEV handler, the only other user of this ioctl, reads and
    // writes at most its 24-byte `struct kvm_sev_cmd`); the pointer never escapes the call.
    unsafe { vm.encrypt_op(&mut c as *mut Cmd) }.map_err(|errno| CmdError { cmd, errno })?;
    Ok(c)
}

/// QUERY: the API version, flags and limits (ENOTTY on a kernel without the series).
pub fn query(vm: &VmFd) -> Result<Query, CmdError> {
    let c = issue(vm, Cmd::new(uapi::QUERY))?;
    // SAFETY: QUERY fills the `query` member; every bit pattern is a valid `Query`.
    Ok(unsafe { c.body.query })
}

/// ENABLE: turns views on for this VM (only before its first vCPU exists).
pub fn enable(vm: &VmFd) -> Result<(), CmdError> {
    issue(vm, Cmd::new(uapi::ENABLE)).map(drop)
}

/// VIEW_CREATE: view `index` (1..=MAX_VIEW) that the guest finds by `tag`.
pub fn create(vm: &VmFd, index: u32, tag: u64) -> Result<(), CmdError> {
    let mut c = Cmd::new(uapi::VIEW_CREATE);
    c.body.view = View { index, pad: 0, tag };
    issue(vm, c).map(drop)
}

/// VIEW_MAP: `npages` 4 KiB pages of VMM memory at `uaddr` become `gpa..` of view `index`
/// with `perm` (R, R|W or R|X). R|X pages are copied at this moment.
///
/// # Safety
/// `uaddr .. uaddr + npages * 4096` must be memory of this process that stays mapped at
/// least until the call returns (the kernel pins what it maps, so the view never refers to
/// freed memory; unmapping it later only leaves the pinned pages to the view).
pub unsafe fn map(vm: &VmFd, m: Map) -> Result<(), CmdError> {
    let mut c = Cmd::new(uapi::VIEW_MAP);
    c.body.map = m;
    issue(vm, c).map(drop)
}

/// VIEW_PUBLISH: the view appears in every vCPU's EPTP list.
pub fn publish(vm: &VmFd, index: u32) -> Result<(), CmdError> {
    let mut c = Cmd::new(uapi::VIEW_PUBLISH);
    c.body.view = View { index, ..View::default() };
    issue(vm, c).map(drop)
}

/// VIEW_DESTROY: the view disappears (safe while vCPUs run in it).
pub fn destroy(vm: &VmFd, index: u32) -> Result<(), CmdError> {
    let mut c = Cmd::new(uapi::VIEW_DESTROY);
    c.body.view = View { index, ..View::default() };
    issue(vm, c).map(drop)
}

/// VCPU_STATS of vCPU `vcpu_id`.
pub fn vcpu_stats(vm: &VmFd, vcpu_id: u32) -> Result<Stats, CmdError> {
    let mut c = Cmd::new(uapi::VCPU_STATS);
    c.body.stats = Stats { vcpu_id, ..Stats::default() };
    let c = issue(vm, c)?;
    // SAFETY: VCPU_STATS fills the `stats` member; every bit pattern is a valid `Stats`.
    Ok(unsafe { c.body.stats })
}

/// What [`MODULE_PARAM`] says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleParam {
    /// No such file: the loaded kvm_intel is not the patched one (or kvm_intel is not loaded).
    Absent,
    Yes,
    No,
    Unreadable(String),
}

/// Reads [`MODULE_PARAM`] (at most 16 bytes).
pub fn module_param() -> ModuleParam {
    use std::io::Read;
    let f = match std::fs::File::open(MODULE_PARAM) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return ModuleParam::Absent,
        Err(e) => return ModuleParam::Unreadable(format!("{MODULE_PARAM}: {e}")),
    };
    let mut s = String::new();
    if let Err(e) = f.take(16).read_to_string(&mut s) {
        return ModuleParam::Unreadable(format!("{MODULE_PARAM}: {e}"));
    }
    match s.trim() {
        "Y" | "1" => ModuleParam::Yes,
        "N" | "0" => ModuleParam::No,
        other => ModuleParam::Unreadable(format!("{MODULE_PARAM} reads {other:?}, expected Y or N")),
    }
}

/// Whether the loaded kvm_intel can give views, from its parameter; `cpu` says what the
/// CPU's VMX capability MSRs showed (for the reason). Err is the `unsupported:` reason.
pub fn host_support(param: &ModuleParam, cpu: &str) -> Result<(), String> {
    match param {
        ModuleParam::Yes => Ok(()),
        ModuleParam::Absent => Err(format!(
            "the loaded kvm_intel is the stock module ({MODULE_PARAM} is absent): upstream KVM never enables \
             VMFUNC for its guests; load the ivbench kvm-patch module (kvm-patch/README.md); {cpu}"
        )),
        ModuleParam::No => Err(format!(
            "the patched kvm_intel reports vmfunc_views=N: the CPU lacks EPT, 4-level EPT or VMFUNC EPTP \
             switching, or the module was loaded with vmfunc_views=0; {cpu}"
        )),
        ModuleParam::Unreadable(e) => Err(format!("cannot tell whether kvm_intel has VMFUNC views: {e}")),
    }
}

/// Judges a VM's QUERY answer. Err is the `unsupported:` reason.
pub fn check_query(q: Result<Query, CmdError>) -> Result<Query, String> {
    match q {
        Err(e) if e.errno.errno() == libc::ENOTTY => Err(format!(
            "{e}: this KVM has no VMFUNC views API (stock KVM; the ivbench kvm-patch adds it to kvm_intel)"
        )),
        Err(e) => Err(format!("{e}: the VMFUNC views API is unusable")),
        Ok(q) if q.version != uapi::API_VERSION => {
            Err(format!("the VMFUNC views API is version {}, ivbench speaks version {}", q.version, uapi::API_VERSION))
        }
        Ok(q) if q.flags & uapi::QUERY_HW == 0 => Err(format!(
            "KVM_VMFUNC_QUERY: flags {:#x} lack KVM_VMFUNC_QUERY_HW: this CPU or module cannot switch EPT views",
            q.flags
        )),
        Ok(q) => Ok(q),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::mem::{offset_of, size_of};

    const HEADER: &str =
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../kvm-patch/include/uapi/asm/kvm_vmfunc.h"));

    /// `#define NAME value` lines of the header (include guard left out), values parsed.
    fn defines() -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for line in HEADER.lines() {
            let Some(rest) = line.strip_prefix("#define ") else { continue };
            let rest = rest.split("/*").next().unwrap();
            let mut it = rest.split_whitespace();
            let name = it.next().unwrap().to_string();
            let value: String = it.collect::<Vec<_>>().join("");
            if value.is_empty() {
                continue; // the include guard
            }
            let v = if let Some(shift) = value.strip_prefix("(1u<<").and_then(|s| s.strip_suffix(')')) {
                1u64 << shift.parse::<u32>().unwrap()
            } else if let Some(hex) = value.strip_prefix("0x") {
                u64::from_str_radix(hex, 16).unwrap()
            } else {
                value.parse().unwrap_or_else(|_| panic!("cannot parse {name} = {value}"))
            };
            out.insert(name, v);
        }
        out
    }

    #[test]
    fn every_constant_matches_the_header() {
        let mirrored: &[(&str, u64)] = &[
            ("KVM_VMFUNC_MAGIC", uapi::MAGIC.into()),
            ("KVM_VMFUNC_API_VERSION", uapi::API_VERSION.into()),
            ("KVM_VMFUNC_QUERY", uapi::QUERY.into()),
            ("KVM_VMFUNC_ENABLE", uapi::ENABLE.into()),
            ("KVM_VMFUNC_VIEW_CREATE", uapi::VIEW_CREATE.into()),
            ("KVM_VMFUNC_VIEW_MAP", uapi::VIEW_MAP.into()),
            ("KVM_VMFUNC_VIEW_PUBLISH", uapi::VIEW_PUBLISH.into()),
            ("KVM_VMFUNC_VIEW_DESTROY", uapi::VIEW_DESTROY.into()),
            ("KVM_VMFUNC_VCPU_STATS", uapi::VCPU_STATS.into()),
            ("KVM_VMFUNC_MAX_VIEW", uapi::MAX_VIEW.into()),
            ("KVM_VMFUNC_MAX_VIEW_PAGES", uapi::MAX_VIEW_PAGES.into()),
            ("KVM_VMFUNC_PERM_R", uapi::PERM_R.into()),
            ("KVM_VMFUNC_PERM_W", uapi::PERM_W.into()),
            ("KVM_VMFUNC_PERM_X", uapi::PERM_X.into()),
            ("KVM_VMFUNC_QUERY_HW", uapi::QUERY_HW.into()),
            ("KVM_VMFUNC_QUERY_ENABLED", uapi::QUERY_ENABLED.into()),
            ("KVM_FEATURE_VMFUNC_VIEWS", uapi::FEATURE_VMFUNC_VIEWS.into()),
            ("KVM_HC_VMFUNC_VIEW_QUERY", uapi::HC_VMFUNC_VIEW_QUERY),
            ("KVM_ENOENT_VIEW", uapi::ENOENT_VIEW as u64),
        ];
        let header = defines();
        for (name, value) in mirrored {
            assert_eq!(header.get(*name), Some(value), "{name}: header vs uapi mirror");
        }
        // A constant added to the header must be mirrored (or consciously left out here).
        let names: Vec<&str> = mirrored.iter().map(|(n, _)| *n).collect();
        for name in header.keys() {
            assert!(names.contains(&name.as_str()), "{name} is in the header but not mirrored in vmm::views::uapi");
        }
        // The magic reads "FMVV" as little-endian bytes, as the header says.
        assert_eq!(&uapi::MAGIC.to_le_bytes(), b"FMVV");
    }

    /// C layout of one header struct: (field, offset, size), and the struct's size.
    fn c_struct(name: &str) -> (Vec<(String, usize, usize)>, usize) {
        let start = HEADER.find(&format!("struct {name} {{")).unwrap_or_else(|| panic!("struct {name} not in header"));
        let body = &HEADER[start..];
        let body = &body[body.find('{').unwrap() + 1..];
        let (mut fields, mut off, mut align, mut depth) = (Vec::new(), 0usize, 1usize, 0);
        let mut union_start = 0;
        let mut union_size = 0usize;
        for line in body.lines() {
            let line = line.split("/*").next().unwrap().trim();
            if line.starts_with("union {") {
                depth += 1;
                off = off.next_multiple_of(8);
                union_start = off;
                continue;
            }
            if line.starts_with('}') {
                if depth == 0 {
                    break;
                }
                depth -= 1;
                fields.push(("(union)".to_string(), union_start, union_size));
                off = union_start + union_size;
                continue;
            }
            let Some(decl) = line.strip_suffix(';') else { continue };
            let mut it = decl.split_whitespace();
            let (ty, name) = match (it.next(), it.next(), it.next()) {
                (Some("struct"), Some(ty), Some(n)) => (ty.to_string(), n.to_string()),
                (Some(ty), Some(n), None) => (ty.to_string(), n.to_string()),
                _ => panic!("unexpected declaration in {name}: {line}"),
            };
            let (base, count, field) = match name.split_once('[') {
                Some((f, n)) => (ty.clone(), n.trim_end_matches(']').parse::<usize>().unwrap(), f.to_string()),
                None => (ty.clone(), 1, name.clone()),
            };
            let (size, a) = match base.as_str() {
                "__u8" => (1, 1),
                "__u32" => (4, 4),
                "__u64" => (8, 8),
                s => {
                    let (_, sz) = c_struct(s);
                    (sz, 8)
                }
            };
            align = align.max(a);
            if depth > 0 {
                union_size = union_size.max(size * count);
                fields.push((field, union_start, size * count));
            } else {
                off = off.next_multiple_of(a);
                fields.push((field, off, size * count));
                off += size * count;
            }
        }
        (fields, off.next_multiple_of(align))
    }

    fn assert_fields(name: &str, rust_size: usize, rust: &[(&str, usize, usize)]) {
        let (fields, size) = c_struct(name);
        assert_eq!(size, rust_size, "sizeof(struct {name})");
        let c: Vec<(String, usize, usize)> = fields.into_iter().filter(|f| f.0 != "(union)").collect();
        let r: Vec<(String, usize, usize)> = rust.iter().map(|(n, o, s)| (n.to_string(), *o, *s)).collect();
        assert_eq!(c, r, "fields of struct {name}: header vs Rust");
    }

    #[test]
    fn every_struct_layout_matches_the_header() {
        assert_fields(
            "kvm_vmfunc_query",
            size_of::<Query>(),
            &[
                ("version", offset_of!(Query, version), 4),
                ("flags", offset_of!(Query, flags), 4),
                ("max_view", offset_of!(Query, max_view), 4),
                ("max_view_pages", offset_of!(Query, max_view_pages), 4),
            ],
        );
        assert_fields(
            "kvm_vmfunc_view",
            size_of::<View>(),
            &[
                ("index", offset_of!(View, index), 4),
                ("pad", offset_of!(View, pad), 4),
                ("tag", offset_of!(View, tag), 8),
            ],
        );
        assert_fields(
            "kvm_vmfunc_map",
            size_of::<Map>(),
            &[
                ("index", offset_of!(Map, index), 4),
                ("perm", offset_of!(Map, perm), 4),
                ("gpa", offset_of!(Map, gpa), 8),
                ("uaddr", offset_of!(Map, uaddr), 8),
                ("npages", offset_of!(Map, npages), 8),
            ],
        );
        assert_fields(
            "kvm_vmfunc_stats",
            size_of::<Stats>(),
            &[
                ("vcpu_id", offset_of!(Stats, vcpu_id), 4),
                ("current_view", offset_of!(Stats, current_view), 4),
                ("vmfunc_ud", offset_of!(Stats, vmfunc_ud), 8),
                ("view_faults", offset_of!(Stats, view_faults), 8),
                ("forced_default", offset_of!(Stats, forced_default), 8),
            ],
        );
        let body = offset_of!(Cmd, body);
        assert_fields(
            "kvm_vmfunc_cmd",
            size_of::<Cmd>(),
            &[
                ("magic", offset_of!(Cmd, magic), 4),
                ("cmd", offset_of!(Cmd, cmd), 4),
                ("flags", offset_of!(Cmd, flags), 8),
                ("query", body, size_of::<Query>()),
                ("view", body, size_of::<View>()),
                ("map", body, size_of::<Map>()),
                ("stats", body, size_of::<Stats>()),
                ("pad", body, 64),
            ],
        );
    }

    #[test]
    fn host_support_names_each_reason() {
        assert_eq!(host_support(&ModuleParam::Yes, "cpu ok"), Ok(()));
        let absent = host_support(&ModuleParam::Absent, "the CPU supports VMFUNC leaf 0").unwrap_err();
        assert!(absent.contains("stock module") && absent.contains(MODULE_PARAM), "{absent}");
        assert!(absent.contains("the CPU supports VMFUNC leaf 0"), "{absent}");
        let no = host_support(&ModuleParam::No, "cpu").unwrap_err();
        assert!(no.contains("vmfunc_views=N"), "{no}");
        let bad = host_support(&ModuleParam::Unreadable("x reads \"?\"".into()), "cpu").unwrap_err();
        assert!(bad.contains("x reads"), "{bad}");
    }

    #[test]
    fn check_query_judges_version_flags_and_errno() {
        let enotty = CmdError { cmd: uapi::QUERY, errno: errno::Error::new(libc::ENOTTY) };
        let r = check_query(Err(enotty)).unwrap_err();
        assert!(r.contains("KVM_VMFUNC_QUERY") && r.contains("stock KVM"), "{r}");
        let eperm = CmdError { cmd: uapi::QUERY, errno: errno::Error::new(libc::EPERM) };
        assert!(check_query(Err(eperm)).unwrap_err().contains("unusable"));
        let good = Query { version: 1, flags: uapi::QUERY_HW, max_view: 511, max_view_pages: 4096 };
        assert_eq!(check_query(Ok(good)), Ok(good));
        let v2 = Query { version: 2, ..good };
        assert!(check_query(Ok(v2)).unwrap_err().contains("version 2"));
        let no_hw = Query { flags: 0, ..good };
        assert!(check_query(Ok(no_hw)).unwrap_err().contains("QUERY_HW"));
    }

    #[test]
    fn trampoline_pages_cover_the_code_and_the_walk() {
        use crate::vmm::layout::{PD0, PDPT, PML4};
        let rx = uapi::PERM_R | uapi::PERM_X;
        let p = trampoline_pages((0x1_0fc0, 0x80)); // straddles a page boundary
        assert_eq!(p[3], (0x1_0000, 0x2000, rx));
        assert_eq!(trampoline_pages((0x1_0040, 0x40))[3], (0x1_0000, 0x1000, rx));
        let tables: Vec<u64> = p[..3].iter().map(|t| t.0).collect();
        assert_eq!(tables, vec![PML4, PDPT, PD0]);
        // never writable and executable at once
        assert!(p.iter().all(|t| t.2 & uapi::PERM_W == 0 || t.2 & uapi::PERM_X == 0));
    }

    #[test]
    fn commands_carry_the_magic_and_zero_flags() {
        let c = Cmd::new(uapi::VIEW_MAP);
        assert_eq!((c.magic, c.cmd, c.flags), (uapi::MAGIC, uapi::VIEW_MAP, 0));
        // SAFETY: `pad` covers the whole union and was initialised.
        assert_eq!(unsafe { c.body.pad }, [0u8; 64]);
        assert_eq!(cmd_name(uapi::VCPU_STATS), "KVM_VMFUNC_VCPU_STATS");
    }
}
