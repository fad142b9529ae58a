//! Guest code: one payload per probe, written as readable x86-64 assembly (AT&T syntax)
//! with `global_asm!`.
//!
//! Every payload sits between a `ivb_<name>_start` and a `ivb_<name>_end` symbol in
//! `.rodata` of the host binary; [`Image::build`] copies all of them into one guest image
//! (loaded at [`layout::IMAGE`]) and patches every hypercall site with the backend's
//! instruction (`vmcall`, `vmmcall`, or `int $0x1b; nop`). Payload code must therefore be
//! position independent (RIP-relative `lea`, relative jumps); absolute numbers are guest
//! physical addresses from [`layout`] (the guest is identity mapped).
//!
//! Common register conventions of the measuring payloads (set by the VMM):
//! - `rdi` sample buffer (one u64 per sample, advanced by 8 per sample; the VMM checks the
//!   final `rdi`), `rsi` number of samples, `r8` operations per sample (1 = per-op),
//! - `r9` the vCPU's result words ([`layout::results`]), `rbp` an expected value,
//! - `r10`, `r15`, `rbx` payload specific (documented in each header),
//! - `r12`, `r13`, `r14` are used by the sample loop; a payload body must keep them.
//!
//! The sample loop (`IVB_LOOP_BEGIN` / `IVB_LOOP_END`) takes `lfence; rdtsc` before and
//! after `r8` executions of the body and stores the difference: per-op samples include the
//! timer cost (measured by the `tsc_overhead` payload, which runs the same loop with an
//! empty body), batched samples are divided by `r8` on the host.
//! A payload ends with `IVB_DONE` (`out` to port 0xf0, then `hlt` forever).
//!
//! Payloads that store their samples themselves use `IVB_SAMPLE reg` (store `reg` at
//! `rdi`, advance `rdi`); `IVB_DELAY reg` spins until `reg` TSC cycles have passed; the
//! two-vCPU payloads wait for a word of a status area (documented in `payloads::irq`) with
//! `IVB_POLL_SET word, stop`.

pub mod args;
mod cpuid;
mod hang;
mod hypercall;
mod irq;
mod mmio;
mod native_loop;
mod notify;
mod path;
mod pio;
mod ring;
mod syscall;
mod tsc;
mod view;
mod vmfunc;

use std::collections::HashMap;

use crate::vmm::backend::Backend;
use crate::vmm::layout;

/// Assembler macros shared by all payloads; defined before and purged after each payload so
/// that the payloads can be assembled in any order and in any codegen unit.
macro_rules! asm_prelude {
    () => {
        concat!(
            asm_symbols!(),
            r#"
.pushsection .rodata.ivb_payloads,"a",@progbits
.p2align 6
.macro IVB_TSC reg
    lfence
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, \reg
.endm
.macro IVB_LOOP_BEGIN
    mov %rsi, %r14
90:
    IVB_TSC %r13
    mov %r8, %r12
91:
.endm
.macro IVB_LOOP_END
    dec %r12
    jnz 91b
    lfence
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    sub %r13, %rax
    IVB_SAMPLE %rax
    dec %r14
    jnz 90b
.endm
# Stores one sample: \reg at rdi, rdi advanced to the next slot.
.macro IVB_SAMPLE reg
    mov \reg, (%rdi)
    add $8, %rdi
.endm
# Spins until \cycles TSC cycles have passed (clobbers rax, rdx, r12).
.macro IVB_DELAY cycles
    IVB_TSC %r12
.Ldelay\@:
    IVB_TSC %rax
    sub %r12, %rax
    cmp \cycles, %rax
    jb .Ldelay\@
.endm
# PAUSE loop until the u64 at \word is non-zero; STOP (offset 0x20 of the own status
# area at r15) jumps to \stop.
.macro IVB_POLL_SET word, stop
.Lpoll\@:
    cmpq $0, \word
    jne .Lpoll_set\@
    cmpq $0, IVB_ST_STOP(%r15)
    jne \stop
    pause
    jmp .Lpoll\@
.Lpoll_set\@:
.endm
.macro IVB_DONE
    out %al, $IVB_PORT_DONE
92:
    hlt
    jmp 92b
.endm
# The interrupt flag: rbx = the vCPU's VIF page on kvm_pvm (byte 0 is vif.if), or 0
# elsewhere (sti / cli).
.macro IVB_IRQ_ON
    test %rbx, %rbx
    jz .Lirq_on_sti\@
    movb $1, (%rbx)
    jmp .Lirq_on_end\@
.Lirq_on_sti\@:
    sti
.Lirq_on_end\@:
.endm
.macro IVB_IRQ_OFF
    test %rbx, %rbx
    jz .Lirq_off_cli\@
    movb $0, (%rbx)
    jmp .Lirq_off_end\@
.Lirq_off_cli\@:
    cli
.Lirq_off_end\@:
.endm
# x2APIC EOI (clobbers rax, rcx, rdx)
.macro IVB_EOI
    mov $IVB_X2APIC_EOI, %ecx
    xor %eax, %eax
    xor %edx, %edx
    wrmsr
.endm
.macro IVB_HYPERCALL site
.globl \site
\site:
    .byte 0x0f, 0x01, 0xc1
.endm
"#
        )
    };
}

macro_rules! asm_postlude {
    () => {
        r#"
.purgem IVB_TSC
.purgem IVB_LOOP_BEGIN
.purgem IVB_LOOP_END
.purgem IVB_SAMPLE
.purgem IVB_DELAY
.purgem IVB_POLL_SET
.purgem IVB_DONE
.purgem IVB_HYPERCALL
.purgem IVB_IRQ_ON
.purgem IVB_IRQ_OFF
.purgem IVB_EOI
.popsection
"#
    };
}

/// `guest_payload!(r#"...asm..."#)`: assembles one payload with the shared macros.
macro_rules! guest_payload {
    ($body:expr) => {
        core::arch::global_asm!(concat!(asm_prelude!(), $body, asm_postlude!()), options(att_syntax, raw));
    };
}
pub(crate) use {asm_postlude, asm_prelude, guest_payload};

/// Host address of a symbol defined in a payload.
macro_rules! sym_addr {
    ($s:ident) => {{
        extern "C" {
            static $s: u8;
        }
        // SAFETY: only the address of the symbol is taken.
        #[allow(unused_unsafe)]
        unsafe {
            core::ptr::addr_of!($s) as usize
        }
    }};
}
pub(crate) use sym_addr;

/// A payload entry point. The only values are the constants of [`entry`], so a misspelt
/// entry does not compile; `every_entry_constant_is_in_the_image` checks that each is
/// defined by exactly one payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Entry(&'static str);

impl Entry {
    /// The entry's name (its assembler label without the `ivb_` prefix).
    pub fn name(self) -> &'static str {
        self.0
    }
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Every payload entry point (documented in the payload that defines it).
pub mod entry {
    use super::Entry;
    pub const CPUID: Entry = Entry("cpuid");
    pub const DONE: Entry = Entry("done");
    pub const HANG_VMCALL: Entry = Entry("hang_vmcall");
    pub const HANG_LOOP: Entry = Entry("hang_loop");
    pub const CRASH_UD2: Entry = Entry("crash_ud2");
    pub const PEEK: Entry = Entry("peek");
    pub const HYPERCALL: Entry = Entry("hypercall");
    pub const IRQ_EXC_STUBS: Entry = Entry("irq_exc_stubs");
    pub const IRQ_HANDLER: Entry = Entry("irq_handler");
    pub const IRQ_KICK: Entry = Entry("irq_kick");
    pub const IRQ_SPURIOUS: Entry = Entry("irq_spurious");
    pub const IRQ_UNEXPECTED: Entry = Entry("irq_unexpected");
    pub const IRQ_RECV: Entry = Entry("irq_recv");
    pub const IPI_SEND: Entry = Entry("ipi_send");
    pub const IRQ_FIXUP_SELFTEST: Entry = Entry("irq_fixup_selftest");
    pub const MMIO_WRITE: Entry = Entry("mmio_write");
    pub const NATIVE_LOOP: Entry = Entry("native_loop");
    pub const POLL_PING: Entry = Entry("poll_ping");
    pub const POLL_PONG: Entry = Entry("poll_pong");
    pub const MWAIT_RECV: Entry = Entry("mwait_recv");
    pub const NOTIFY_STORE: Entry = Entry("notify_store");
    pub const PIO_OUT: Entry = Entry("pio_out");
    pub const SYSCALL: Entry = Entry("syscall");
    pub const SYS_ENTRY: Entry = Entry("sys_entry");
    pub const TSC_OVERHEAD: Entry = Entry("tsc_overhead");
    pub const VIEW_SWITCH: Entry = Entry("view_switch");
    pub const VMFUNC_DISCOVER: Entry = Entry("vmfunc_discover");
    pub const VMFUNC_SWITCH: Entry = Entry("vmfunc_switch");
    pub const TOKEN_RING: Entry = Entry("token_ring");
    pub const PATH_GEN: Entry = Entry("path_gen");
    pub const PATH_SINK: Entry = Entry("path_sink");
    pub const PATH_FWD: Entry = Entry("path_fwd");
    /// Every constant above.
    pub const ALL: &[Entry] = &[
        CPUID,
        DONE,
        HANG_VMCALL,
        HANG_LOOP,
        CRASH_UD2,
        PEEK,
        HYPERCALL,
        IRQ_EXC_STUBS,
        IRQ_HANDLER,
        IRQ_KICK,
        IRQ_SPURIOUS,
        IRQ_UNEXPECTED,
        IRQ_RECV,
        IPI_SEND,
        IRQ_FIXUP_SELFTEST,
        MMIO_WRITE,
        NATIVE_LOOP,
        POLL_PING,
        POLL_PONG,
        MWAIT_RECV,
        NOTIFY_STORE,
        PIO_OUT,
        SYSCALL,
        SYS_ENTRY,
        TSC_OVERHEAD,
        VIEW_SWITCH,
        VMFUNC_DISCOVER,
        VMFUNC_SWITCH,
        TOKEN_RING,
        PATH_GEN,
        PATH_SINK,
        PATH_FWD,
    ];
}

/// One payload as it sits in the host binary.
pub struct Payload {
    pub name: &'static str,
    pub start: usize,
    pub end: usize,
    /// (entry, host address)
    pub entries: Vec<(Entry, usize)>,
    /// Host addresses of 3-byte hypercall placeholders.
    pub hypercall_sites: Vec<usize>,
}

impl Payload {
    fn bytes(&self) -> &'static [u8] {
        assert!(self.end >= self.start, "payload {}: end before start", self.name);
        // SAFETY: start..end delimit the payload's bytes in .rodata of this binary.
        unsafe { std::slice::from_raw_parts(self.start as *const u8, self.end - self.start) }
    }
}

fn all() -> Vec<Payload> {
    vec![
        tsc::payload(),
        native_loop::payload(),
        hypercall::payload(),
        pio::payload(),
        mmio::payload(),
        cpuid::payload(),
        syscall::payload(),
        view::payload(),
        vmfunc::payload(),
        hang::payload(),
        irq::payload(),
        notify::payload(),
        ring::payload(),
        path::payload(),
    ]
}

/// All payloads laid out for one backend, ready to copy to [`layout::IMAGE`].
pub struct Image {
    pub bytes: Vec<u8>,
    entries: HashMap<Entry, u64>,
    /// Payload name -> (first GPA, length in bytes).
    ranges: HashMap<&'static str, (u64, u64)>,
}

impl Image {
    pub fn build(backend: &dyn Backend) -> Result<Image, String> {
        let mut bytes = Vec::new();
        let mut entries = HashMap::new();
        let mut ranges = HashMap::new();
        let insn = backend.hypercall_insn();
        for p in all() {
            while bytes.len() % 64 != 0 {
                bytes.push(0xcc);
            }
            let base = bytes.len();
            bytes.extend_from_slice(p.bytes());
            ranges.insert(p.name, (layout::IMAGE + base as u64, (p.end - p.start) as u64));
            for (name, addr) in &p.entries {
                if *addr < p.start || *addr >= p.end {
                    return Err(format!("payload {}: entry {name} outside the payload", p.name));
                }
                let gpa = layout::IMAGE + (base + addr - p.start) as u64;
                if entries.insert(*name, gpa).is_some() {
                    return Err(format!("payload entry {name} defined twice"));
                }
            }
            for site in &p.hypercall_sites {
                if *site < p.start || site + 3 > p.end {
                    return Err(format!("payload {}: hypercall site outside the payload", p.name));
                }
                let off = base + site - p.start;
                if bytes[off..off + 3] != [0x0f, 0x01, 0xc1] {
                    return Err(format!(
                        "payload {}: hypercall site at +{:#x} is not a placeholder",
                        p.name,
                        site - p.start
                    ));
                }
                bytes[off..off + 3].copy_from_slice(&insn);
            }
        }
        if bytes.len() as u64 > layout::IMAGE_MAX {
            return Err(format!("guest image is {} bytes, more than {}", bytes.len(), layout::IMAGE_MAX));
        }
        Ok(Image { bytes, entries, ranges })
    }

    /// GPA of a payload entry point (None only for an entry no payload defines, which
    /// `every_entry_constant_is_in_the_image` rules out).
    pub fn entry(&self, e: Entry) -> Option<u64> {
        self.entries.get(&e).copied()
    }

    /// `(gpa, len)` of payload `name` in the guest (to map its code into a memory view).
    pub fn payload_range(&self, name: &str) -> Option<(u64, u64)> {
        self.ranges.get(name).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::backend::{Amd, Intel, Pvm};

    #[test]
    fn hypercall_sites_are_patched_per_backend() {
        let backends: [&dyn Backend; 3] = [&Pvm, &Intel, &Amd];
        for b in backends {
            let img = Image::build(b).unwrap();
            let hc = all().into_iter().find(|p| p.name == "hypercall").unwrap();
            assert_eq!(hc.hypercall_sites.len(), 2);
            let entry = img.entry(entry::HYPERCALL).unwrap();
            for site in &hc.hypercall_sites {
                let off = (entry - layout::IMAGE) as usize + (site - hc.entries[0].1);
                assert_eq!(img.bytes[off..off + 3], b.hypercall_insn(), "{}", b.name());
            }
            // the only vmcall left is the deliberate one of the hang test (unless the
            // backend's hypercall is vmcall itself)
            let vmcalls = img.bytes.windows(3).filter(|w| *w == [0x0f, 0x01, 0xc1]).count();
            let sites: usize = all().iter().map(|p| p.hypercall_sites.len()).sum();
            let want = if b.hypercall_insn() == [0x0f, 0x01, 0xc1] { 1 + sites } else { 1 };
            assert_eq!(vmcalls, want, "{}", b.name());
        }
    }

    #[test]
    fn every_entry_is_inside_the_image() {
        let img = Image::build(&Pvm).unwrap();
        for p in all() {
            for (name, _) in &p.entries {
                let gpa = img.entry(*name).unwrap();
                assert!(gpa >= layout::IMAGE && gpa < layout::IMAGE + img.bytes.len() as u64, "{name}");
            }
        }
        assert!(img.bytes.len() as u64 <= layout::IMAGE_MAX);
    }

    #[test]
    fn every_entry_constant_is_in_the_image() {
        let img = Image::build(&Pvm).unwrap();
        for e in entry::ALL {
            assert!(img.entry(*e).is_some(), "{e} is defined by no payload");
        }
        let defined: usize = all().iter().map(|p| p.entries.len()).sum();
        assert_eq!(defined, entry::ALL.len(), "a payload entry has no constant in `entry`");
    }
}
