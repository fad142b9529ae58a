//! Interrupt plumbing for the multi-vCPU probes (`vm.irq.*`, `vm.ipi.*`, `vm.notify.*`):
//! in-kernel irqchip, GDT + IDT, x2APIC, MSI routes, and the host/guest TSC relation.
//!
//! Everything here is additive to [`Vm`] / [`Vcpu`]: the probes call these helpers between
//! `Vm::new` and the first `Vcpu::run`.
//!
//! - The IDT written by [`write_tables`] sends vector [`VEC_IRQ`] to the `irq_handler`
//!   payload (stamps `lfence; rdtsc` into the vCPU's status area), [`VEC_KICK`] to
//!   `irq_kick` (host "wake up and look at the stop flag"), [`VEC_SPURIOUS`] to
//!   `irq_spurious`, exceptions 0..31 to stubs that report the vector on
//!   [`layout::PORT_ERROR`], and every other vector to `irq_unexpected` (reports 0xfe).
//! - kvm_pvm delivers through the guest IDT only when a GDT is set too (0x10 code, 0x18
//!   data, the selectors the VMM's long-mode sregs already use).

use crate::payloads::entry;
use std::time::Instant;

use super::error::VmmError;
use kvm_bindings::{
    kvm_enable_cap, kvm_irq_routing_entry, kvm_mp_state, kvm_msi, kvm_msr_entry, KvmIrqRouting, Msrs,
    KVM_IRQ_ROUTING_MSI, KVM_MP_STATE_RUNNABLE,
};

use super::backend::BackendKind;
use super::layout;
use super::vcpu::Vcpu;
use super::vm::Vm;

/// Status area offsets of a vCPU's status area at `layout::params(id)` (the guest ABI's
/// `abi::status`, documented in `payloads::irq`).
pub mod st {
    pub use crate::abi::status::*;
}

/// The measured interrupt vector (irqfd MSI, IPIs).
pub const VEC_IRQ: u8 = 0x40;
/// Host "kick": wakes a halted vCPU so that it sees its stop flag (abort paths only).
pub const VEC_KICK: u8 = 0x41;
/// The LAPIC spurious vector (SVR = 0x1ff).
pub const VEC_SPURIOUS: u8 = 0xff;
/// Error code `irq_unexpected` reports on PORT_ERROR.
pub const UNEXPECTED_VECTOR_CODE: u8 = crate::abi::port::UNEXPECTED_VECTOR;

/// x2APIC MSRs.
pub const MSR_APIC_BASE: u32 = 0x1b;
pub const MSR_X2APIC_ICR: u32 = crate::abi::x2apic::ICR;
pub const MSR_X2APIC_EOI: u32 = crate::abi::x2apic::EOI;
pub const MSR_IA32_TSC: u32 = 0x10;

/// GDT limit: null, null, 0x10 code, 0x18 data.
const GDT_LIMIT: u16 = 4 * 8 - 1;
const IDT_LIMIT: u16 = 256 * 16 - 1;
/// Size of one exception stub in the `irq_exc_stubs` payload table.
pub const EXC_STUB_SIZE: u64 = 8;

/// KVM_CREATE_IRQCHIP (PIC + IOAPIC + in-kernel LAPICs). Call before any vCPU exists.
pub fn create_irqchip(vm: &Vm) -> Result<(), VmmError> {
    vm.fd().create_irq_chip().map_err(|e| VmmError::Unsupported(format!("KVM_CREATE_IRQCHIP refused: {e}")))
}

fn gate(handler: u64) -> (u64, u64) {
    // 64-bit interrupt gate: selector 0x10, type 0xE, present, DPL 0.
    let lo = (handler & 0xffff) | (0x10 << 16) | (0x8e << 40) | (((handler >> 16) & 0xffff) << 48);
    (lo, handler >> 32)
}

/// Writes the GDT at [`layout::GDT`] and the IDT at [`layout::IDT`] (see the module docs).
pub fn write_tables(vm: &Vm) -> Result<(), VmmError> {
    let gdt: [u64; 4] = [0, 0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff];
    vm.write_bytes(layout::GDT, &gdt.iter().flat_map(|d| d.to_le_bytes()).collect::<Vec<u8>>())?;
    let stubs = vm.entry(entry::IRQ_EXC_STUBS)?;
    let handler = vm.entry(entry::IRQ_HANDLER)?;
    let kick = vm.entry(entry::IRQ_KICK)?;
    let spurious = vm.entry(entry::IRQ_SPURIOUS)?;
    let unexpected = vm.entry(entry::IRQ_UNEXPECTED)?;
    let mut idt = Vec::with_capacity(256 * 16);
    for v in 0..256u64 {
        let h = match v {
            0..=31 => stubs + v * EXC_STUB_SIZE,
            x if x == u64::from(VEC_IRQ) => handler,
            x if x == u64::from(VEC_KICK) => kick,
            x if x == u64::from(VEC_SPURIOUS) => spurious,
            _ => unexpected,
        };
        let (lo, hi) = gate(h);
        idt.extend_from_slice(&lo.to_le_bytes());
        idt.extend_from_slice(&hi.to_le_bytes());
    }
    vm.write_bytes(layout::IDT, &idt)
}

/// Points the vCPU's GDTR / IDTR at the tables of [`write_tables`].
pub fn install_tables(vcpu: &Vcpu) -> Result<(), VmmError> {
    let mut s = vcpu.fd().get_sregs().map_err(|e| fail(vcpu, "KVM_GET_SREGS", e))?;
    s.gdt.base = layout::GDT;
    s.gdt.limit = GDT_LIMIT;
    s.idt.base = layout::IDT;
    s.idt.limit = IDT_LIMIT;
    vcpu.fd().set_sregs(&s).map_err(|e| fail(vcpu, "KVM_SET_SREGS (GDT/IDT)", e))
}

fn fail(vcpu: &Vcpu, what: &str, e: impl std::fmt::Display) -> VmmError {
    VmmError::setup(vcpu.label(), format!("vCPU {}: {what}: {e}", vcpu.id()))
}

/// Puts the vCPU's in-kernel LAPIC in x2APIC mode (APIC base MSR: enable | x2APIC | BSP for
/// vCPU 0), software-enables it (SVR = 0x1ff, spurious vector 0xff), TPR 0, and makes a
/// secondary vCPU runnable (on the in-kernel irqchip an AP otherwise waits for INIT/SIPI).
/// Returns a one-line description.
pub fn enable_x2apic(vcpu: &Vcpu) -> Result<String, VmmError> {
    let base = 0xfee0_0000u64 | 0x800 | 0x400 | if vcpu.id() == 0 { 0x100 } else { 0 };
    vcpu.set_msrs(&[(MSR_APIC_BASE, base)])?;
    let mut la = vcpu.fd().get_lapic().map_err(|e| fail(vcpu, "KVM_GET_LAPIC", e))?;
    let put = |la: &mut kvm_bindings::kvm_lapic_state, off: usize, v: u32| {
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            la.regs[off + i] = *b as _;
        }
    };
    put(&mut la, 0xf0, 0x1ff); // SVR: APIC software enable, spurious vector 0xff
    put(&mut la, 0x80, 0); // TPR
    vcpu.fd().set_lapic(&la).map_err(|e| fail(vcpu, "KVM_SET_LAPIC", e))?;
    if vcpu.id() != 0 {
        vcpu.fd()
            .set_mp_state(kvm_mp_state { mp_state: KVM_MP_STATE_RUNNABLE })
            .map_err(|e| fail(vcpu, "KVM_SET_MP_STATE(RUNNABLE)", e))?;
    }
    Ok(format!("vCPU {}: x2APIC (APIC base {base:#x}), SVR 0x1ff", vcpu.id()))
}

/// x2APIC ICR value for a fixed, physical-destination interrupt `vector` to APIC id `dest`.
pub fn x2apic_icr(dest: u32, vector: u8) -> u64 {
    (u64::from(dest) << 32) | u64::from(vector)
}

fn msi_address(dest: u32) -> u32 {
    0xfee0_0000 | ((dest & 0xff) << 12)
}

/// KVM_SET_GSI_ROUTING with one MSI route: `gsi` -> fixed `vector` at APIC id `dest`.
pub fn route_msi(vm: &Vm, gsi: u32, dest: u32, vector: u8) -> Result<(), VmmError> {
    route_msis(vm, &[gsi], dest, vector)
}

/// KVM_SET_GSI_ROUTING with one MSI route per GSI, all to fixed `vector` at APIC id
/// `dest` (the call replaces the whole table, so every route goes in at once).
pub fn route_msis(vm: &Vm, gsis: &[u32], dest: u32, vector: u8) -> Result<(), VmmError> {
    let entries: Vec<kvm_irq_routing_entry> = gsis
        .iter()
        .map(|&gsi| {
            let mut e = kvm_irq_routing_entry { gsi, type_: KVM_IRQ_ROUTING_MSI, ..Default::default() };
            e.u.msi.address_lo = msi_address(dest);
            e.u.msi.address_hi = 0;
            e.u.msi.data = u32::from(vector);
            e
        })
        .collect();
    let r = KvmIrqRouting::from_entries(&entries)
        .map_err(|e| VmmError::setup(vm.label(), format!("routing table: {e:?}")))?;
    vm.fd()
        .set_gsi_routing(&r)
        .map_err(|e| VmmError::Unsupported(format!("KVM_SET_GSI_ROUTING (MSI route) refused: {e}")))
}

/// KVM_SIGNAL_MSI: one fixed interrupt `vector` to APIC id `dest` (used for kicks).
pub fn signal_msi(vm: &Vm, dest: u32, vector: u8) -> Result<(), VmmError> {
    let m = kvm_msi { address_lo: msi_address(dest), data: u32::from(vector), ..Default::default() };
    vm.fd().signal_msi(m).map(|_| ()).map_err(|e| VmmError::setup(vm.label(), format!("KVM_SIGNAL_MSI: {e}")))
}

/// KVM_ENABLE_CAP(KVM_CAP_X86_DISABLE_EXITS, `flags`) on the VM (before any vCPU exists).
pub fn disable_exits(vm: &Vm, flags: u32) -> Result<(), VmmError> {
    let cap = kvm_enable_cap {
        cap: kvm_bindings::KVM_CAP_X86_DISABLE_EXITS,
        args: [u64::from(flags), 0, 0, 0],
        ..Default::default()
    };
    vm.fd().enable_cap(&cap).map_err(|e| {
        VmmError::Unsupported(format!("KVM_ENABLE_CAP(KVM_CAP_X86_DISABLE_EXITS, {flags:#x}) refused: {e}"))
    })
}

/// Address the payloads use to switch the guest's interrupt flag: the vCPU's VIF page on
/// kvm_pvm (byte 0 is `vif.if`), 0 elsewhere (the payloads then use `sti` / `cli`).
pub fn irq_flag_addr(vcpu: &Vcpu) -> u64 {
    if vcpu.backend().kind() == BackendKind::Pvm {
        layout::vif_page(vcpu.id())
    } else {
        0
    }
}

#[inline]
pub fn host_tsc() -> u64 {
    // SAFETY: lfence and rdtsc have no preconditions on x86-64.
    unsafe {
        core::arch::x86_64::_mm_lfence();
        core::arch::x86_64::_rdtsc()
    }
}

/// Guest TSC minus host TSC, measured by reading the guest's IA32_TSC (KVM_GET_MSRS)
/// between two host `rdtsc`s; the tightest of 32 brackets. Returns (offset, half width of
/// the bracket).
pub fn tsc_offset(vcpu: &Vcpu) -> Result<(i64, u64), VmmError> {
    let mut best: Option<(i64, u64)> = None;
    for _ in 0..32 {
        let mut msrs = Msrs::from_entries(&[kvm_msr_entry { index: MSR_IA32_TSC, ..Default::default() }])
            .map_err(|e| VmmError::setup(vcpu.label(), format!("MSR list: {e:?}")))?;
        let t0 = host_tsc();
        let n = vcpu.fd().get_msrs(&mut msrs).map_err(|e| fail(vcpu, "KVM_GET_MSRS(IA32_TSC)", e))?;
        let t1 = host_tsc();
        if n != 1 {
            return Err(fail(vcpu, "KVM_GET_MSRS(IA32_TSC)", "not returned"));
        }
        let g = msrs.as_slice()[0].data;
        let half = (t1 - t0) / 2;
        let off = g.wrapping_sub(t0 + half) as i64;
        match best {
            Some((_, h)) if h <= half => {}
            _ => best = Some((off, half)),
        }
    }
    Ok(best.expect("32 tries"))
}

/// KVM_GET_DEVICE_ATTR / KVM_SET_DEVICE_ATTR on a vCPU fd (`_IOW(KVMIO, 0xe2 / 0xe1,
/// struct kvm_device_attr)`; kvm-ioctls wraps them for aarch64 only).
const KVM_SET_DEVICE_ATTR: libc::c_ulong = 0x4018_aee1;
const KVM_GET_DEVICE_ATTR: libc::c_ulong = 0x4018_aee2;

fn tsc_offset_attr(vcpu: &Vcpu, request: libc::c_ulong, value: &mut u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let attr = kvm_bindings::kvm_device_attr {
        flags: 0,
        group: kvm_bindings::KVM_VCPU_TSC_CTRL,
        attr: u64::from(kvm_bindings::KVM_VCPU_TSC_OFFSET),
        addr: value as *mut u64 as u64,
    };
    // SAFETY: attr points at a live u64 the kernel reads (SET) or writes (GET).
    let r = unsafe { libc::ioctl(vcpu.fd().as_raw_fd(), request, &attr) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Makes the guest TSC equal the host TSC where KVM lets the VMM set the vCPU's TSC offset
/// (KVM_VCPU_TSC_CTRL / KVM_VCPU_TSC_OFFSET): reads it and sets it to 0 when it is not.
/// Returns a note; never fails (the measured offset of [`tsc_offset`] is the check).
pub fn zero_tsc_offset(vcpu: &Vcpu) -> String {
    let mut prev = 0u64;
    if let Err(e) = tsc_offset_attr(vcpu, KVM_GET_DEVICE_ATTR, &mut prev) {
        return format!("KVM_VCPU_TSC_OFFSET not readable ({e})");
    }
    if prev == 0 {
        return "KVM_VCPU_TSC_OFFSET is 0".into();
    }
    let mut zero = 0u64;
    match tsc_offset_attr(vcpu, KVM_SET_DEVICE_ATTR, &mut zero) {
        Ok(()) => format!("KVM_VCPU_TSC_OFFSET was {} cycles, set to 0", prev as i64),
        Err(e) => format!("KVM_VCPU_TSC_OFFSET is {} cycles and could not be set to 0 ({e})", prev as i64),
    }
}

/// What the host says about posted interrupts (APICv / AVIC), for notes.
pub fn apicv_note(kind: BackendKind) -> String {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string());
    match kind {
        BackendKind::Pvm => {
            "no APICv: kvm_pvm (interrupts are injected by PVM in software; no posted interrupts)".into()
        }
        BackendKind::Intel => match read("/sys/module/kvm_intel/parameters/enable_apicv") {
            Ok(v) if v == "Y" || v == "1" => {
                "APICv on (kvm_intel enable_apicv=Y): posted-interrupt delivery path".into()
            }
            Ok(v) => format!("APICv off (kvm_intel enable_apicv={v}): interrupts injected on VM entry"),
            Err(e) => format!("APICv unknown (/sys/module/kvm_intel/parameters/enable_apicv: {e})"),
        },
        BackendKind::Amd => match read("/sys/module/kvm_amd/parameters/avic") {
            Ok(v) => format!("no APICv on AMD; AVIC parameter avic={v}"),
            Err(e) => format!("no APICv on AMD; AVIC unknown ({e})"),
        },
    }
}

/// Cycles to busy-wait so that a peer that announced it is about to HLT really is halted:
/// 20 µs at the guest's TSC rate.
pub fn settle_cycles(tsc_khz: u64) -> u64 {
    tsc_khz * 20 / 1000
}

/// Busy-waits `cycles` TSC cycles on the host.
pub fn host_delay(cycles: u64) {
    let t = host_tsc();
    while host_tsc().wrapping_sub(t) < cycles {
        std::hint::spin_loop();
    }
}

/// A deadline check usable in host spin loops.
pub fn past(deadline: Instant) -> bool {
    Instant::now() >= deadline
}
