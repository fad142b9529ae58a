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

mod cpuid;
mod hang;
mod hypercall;
mod irq;
mod mmio;
mod native_loop;
mod notify;
mod pio;
mod syscall;
mod tsc;
mod view;

use std::collections::HashMap;

use crate::vmm::backend::Backend;
use crate::vmm::layout;

/// Assembler macros shared by all payloads; defined before and purged after each payload so
/// that the payloads can be assembled in any order and in any codegen unit.
macro_rules! asm_prelude {
    () => {
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
    cmpq $0, 0x20(%r15)
    jne \stop
    pause
    jmp .Lpoll\@
.Lpoll_set\@:
.endm
.macro IVB_DONE
    out %al, $0xf0
92:
    hlt
    jmp 92b
.endm
.macro IVB_HYPERCALL site
.globl \site
\site:
    .byte 0x0f, 0x01, 0xc1
.endm
"#
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
.popsection
"#
    };
}

/// `guest_payload!(r#"...asm..."#)`: assembles one payload with the shared macros.
macro_rules! guest_payload {
    ($body:expr) => {
        core::arch::global_asm!(
            concat!(asm_prelude!(), $body, asm_postlude!()),
            options(att_syntax, raw)
        );
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

/// One payload as it sits in the host binary.
pub struct Payload {
    pub name: &'static str,
    pub start: usize,
    pub end: usize,
    /// (entry name, host address)
    pub entries: Vec<(&'static str, usize)>,
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
        hang::payload(),
        irq::payload(),
        notify::payload(),
    ]
}

/// All payloads laid out for one backend, ready to copy to [`layout::IMAGE`].
pub struct Image {
    pub bytes: Vec<u8>,
    entries: HashMap<&'static str, u64>,
}

impl Image {
    pub fn build(backend: &dyn Backend) -> Result<Image, String> {
        let mut bytes = Vec::new();
        let mut entries = HashMap::new();
        let insn = backend.hypercall_insn();
        for p in all() {
            while bytes.len() % 64 != 0 {
                bytes.push(0xcc);
            }
            let base = bytes.len();
            bytes.extend_from_slice(p.bytes());
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
                    return Err(format!("payload {}: hypercall site at +{:#x} is not a placeholder", p.name, site - p.start));
                }
                bytes[off..off + 3].copy_from_slice(&insn);
            }
        }
        if bytes.len() > layout::IMAGE_MAX {
            return Err(format!("guest image is {} bytes, more than {}", bytes.len(), layout::IMAGE_MAX));
        }
        Ok(Image { bytes, entries })
    }

    /// GPA of a payload entry point.
    pub fn entry(&self, name: &str) -> Option<u64> {
        self.entries.get(name).copied()
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
            let entry = img.entry("hypercall").unwrap();
            for site in &hc.hypercall_sites {
                let off = (entry - layout::IMAGE) as usize + (site - hc.entries[0].1);
                assert_eq!(img.bytes[off..off + 3], b.hypercall_insn(), "{}", b.name());
            }
            // the only vmcall left is the deliberate one of the hang test (unless the
            // backend's hypercall is vmcall itself)
            let vmcalls = img.bytes.windows(3).filter(|w| *w == [0x0f, 0x01, 0xc1]).count();
            let want = if b.hypercall_insn() == [0x0f, 0x01, 0xc1] { 3 } else { 1 };
            assert_eq!(vmcalls, want, "{}", b.name());
        }
    }

    #[test]
    fn every_entry_is_inside_the_image() {
        let img = Image::build(&Pvm).unwrap();
        for p in all() {
            for (name, _) in &p.entries {
                let gpa = img.entry(name).unwrap();
                assert!(gpa >= layout::IMAGE && gpa < layout::IMAGE + img.bytes.len() as u64, "{name}");
            }
        }
        assert!(img.bytes.len() <= layout::IMAGE_MAX);
    }
}
