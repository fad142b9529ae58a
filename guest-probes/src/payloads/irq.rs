//! Interrupt payloads (probes `vm.irq.inject`, `vm.ipi.roundtrip`, `vm.notify.halt`):
//! the IDT handlers and the two loops that wait for / send interrupts.
//!
//! Every vCPU running these keeps `r15` = its status area ([`crate::vmm::layout::params`]);
//! the handlers write there. Status area (offsets, u64 each; `vmm::irqchip::st` mirrors them):
//!
//! ```text
//! 0x00 STAMP    lfence;rdtsc taken at the entry of the vector-0x40 handler (0 = none yet)
//! 0x08 COUNT    vector-0x40 handler entries
//! 0x10 READY    set by a receiver when it starts waiting; cleared by the sender
//! 0x18 SRC      the sender's stamp (host rdtsc or the peer vCPU's lfence;rdtsc)
//! 0x20 STOP     set by the host to abort: every wait loop checks it
//! 0x28 EARLY    HLTs that returned with no interrupt delivered (early wakes)
//! 0x30 HLTS     HLT instructions executed
//! 0x38 FIXUPS   interrupts taken right before a HLT (the handler stepped over the HLT)
//! 0x40 KICKS    vector-0x41 entries (host kicks; abort paths only)
//! 0x48 SPURIOUS vector-0xff entries
//! 0x50 MWAITS   MWAITs executed (payload notify)
//! 0x58 SENT     IPIs sent
//! ```
//!
//! The interrupt flag: `rbx` = the vCPU's VIF page on kvm_pvm (byte 0 is `vif.if`), or 0
//! on other backends, where `sti` / `cli` are used. A wait with HLT disables interrupts,
//! checks STAMP, enables them and executes HLT; an interrupt that lands between enabling
//! and the HLT is caught by the handler, which steps the saved RIP over the HLT (no lost
//! wake-up, no reliance on an STI shadow that kvm_pvm does not have).
//!
//! EOI: x2APIC `wrmsr 0x80b`, always after the timed part.

use super::{asm_postlude, asm_prelude, entry, guest_payload, sym_addr, Payload};

guest_payload!(
    r#"
# x2APIC ICR write of \reg = dest << 32 | vector (clobbers rax, rcx, rdx)
.macro IVB_SEND_IPI reg
    mov $IVB_X2APIC_ICR, %ecx
    mov \reg, %rax
    mov \reg, %rdx
    shr $32, %rdx
    wrmsr
.endm
# Wait with interrupts enabled, polling STAMP; STOP jumps to \stop.
.macro IVB_SPIN_WAIT stop
    IVB_IRQ_ON
    IVB_POLL_SET IVB_ST_STAMP(%r15), \stop
.endm
# Wait in HLT until STAMP is set; early wakes are counted and HLT re-entered.
.macro IVB_HLT_WAIT stop
.Lhw_top\@:
    IVB_IRQ_OFF
    cmpq $0, IVB_ST_STAMP(%r15)
    jne .Lhw_got\@
    cmpq $0, IVB_ST_STOP(%r15)
    jne \stop
    incq IVB_ST_HLTS(%r15)
    IVB_IRQ_ON
    hlt
    cmpq $0, IVB_ST_STAMP(%r15)
    jne .Lhw_got\@
    incq IVB_ST_EARLY(%r15)
    jmp .Lhw_top\@
.Lhw_got\@:
    IVB_IRQ_ON
.endm

.globl ivb_irq_start
.globl ivb_irq_end
.globl ivb_irq_exc_stubs
.globl ivb_irq_handler
.globl ivb_irq_kick
.globl ivb_irq_spurious
.globl ivb_irq_unexpected
.globl ivb_irq_recv
.globl ivb_ipi_send
.globl ivb_irq_fixup_selftest
ivb_irq_start:

# ---- IDT targets -------------------------------------------------------------------
# Exceptions 0..31: one 8-byte stub each, reporting the vector on the error port.
.p2align 3
ivb_irq_exc_stubs:
.irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .p2align 3
    mov $\n, %al
    out %al, $IVB_PORT_ERROR
    jmp .
.endr

# Vector 0x40, the measured interrupt: stamp first (that is the figure), then count.
.p2align 4
ivb_irq_handler:
    push %rax
    push %rdx
    lfence
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, IVB_ST_STAMP(%r15)        # STAMP = handler entry
    incq IVB_ST_COUNT(%r15)             # COUNT
    mov 16(%rsp), %rax          # interrupted RIP
    cmpb $0xf4, (%rax)          # about to execute HLT?
    jne 1f
    incq 16(%rsp)               # step over it: this interrupt is its wake-up
    incq IVB_ST_FIXUPS(%r15)             # FIXUPS
1:
    pop %rdx
    pop %rax
    iretq

# Vector 0x41, host kick on abort: EOI, step over a pending HLT, return.
.p2align 4
ivb_irq_kick:
    push %rax
    push %rcx
    push %rdx
    incq IVB_ST_KICKS(%r15)             # KICKS
    IVB_EOI
    mov 24(%rsp), %rax
    cmpb $0xf4, (%rax)
    jne 1f
    incq 24(%rsp)
1:
    pop %rdx
    pop %rcx
    pop %rax
    iretq

# Vector 0xff, LAPIC spurious interrupt: count, no EOI.
.p2align 4
ivb_irq_spurious:
    incq IVB_ST_SPURIOUS(%r15)
    iretq

# Any other vector: report 0xfe on the error port.
.p2align 4
ivb_irq_unexpected:
    mov $IVB_PORT_UNEXPECTED_VECTOR, %al
    out %al, $IVB_PORT_ERROR
    jmp .

# ---- irq_recv: wait for an interrupt, once per sample ------------------------------
# Times the one-way delivery: sample = STAMP (handler entry) - SRC (sender's stamp).
# Per sample: STAMP = 0, READY = 1, wait (spin with interrupts on, or HLT), optionally
# IPI back to the sender (r11 != 0: the round trip of vm.ipi.roundtrip), store the sample,
# EOI.
# In: rdi = sample buffer, rsi = samples, r15 = status area, rbx = VIF page or 0,
#     r8 = 0 spin / 1 HLT, r11 = ICR (dest << 32 | vector) to send back, or 0.
ivb_irq_recv:
    mov %rsi, %r14
1:
    movq $0, IVB_ST_STAMP(%r15)         # STAMP = 0
    movq $1, IVB_ST_READY(%r15)         # READY
    test %r8, %r8
    jnz 2f
    IVB_SPIN_WAIT 9f
    jmp 3f
2:
    IVB_HLT_WAIT 9f
3:
    test %r11, %r11
    jz 4f
    IVB_SEND_IPI %r11           # the reply of a round trip
    incq IVB_ST_SENT(%r15)             # SENT
4:
    mov IVB_ST_STAMP(%r15), %rax
    sub IVB_ST_SRC(%r15), %rax        # handler entry - sender's stamp
    IVB_SAMPLE %rax
    IVB_EOI
    dec %r14
    jnz 1b
9:
    IVB_DONE

# ---- ipi_send: the sending vCPU -----------------------------------------------------
# Per sample: wait until the peer is READY, clear it, wait r9 cycles (lets a peer that
# waits in HLT really halt), stamp t0 into the peer's SRC, write the x2APIC ICR, and then
#   r8 = 0: spin (interrupts on) until the peer's reply IPI stamps our STAMP,
#   r8 = 1: wait for the reply in HLT,
#   r8 = 2: no reply expected (one-way; the peer's samples are the figure).
# For r8 = 0/1 the sample is the round trip STAMP (our handler entry) - t0.
# In: rdi = sample buffer, rsi = samples, r15 = own status area, r10 = peer's status
#     area, r11 = ICR (peer APIC id << 32 | vector), rbx = VIF page or 0, r8 = mode,
#     r9 = delay cycles.
ivb_ipi_send:
    mov %rsi, %r14
    IVB_IRQ_ON
1:
    IVB_POLL_SET IVB_ST_READY(%r10), 9f # peer READY?
    movq $0, IVB_ST_READY(%r10)
    movq $0, IVB_ST_STAMP(%r15)         # our STAMP: the reply has not come yet
    test %r9, %r9
    jz 4f
    IVB_DELAY %r9
4:
    IVB_TSC %r13                # t0
    mov %r13, IVB_ST_SRC(%r10)        # peer's SRC
    IVB_SEND_IPI %r11
    incq IVB_ST_SENT(%r15)             # SENT
    cmp $2, %r8
    je 8f
    cmp $1, %r8
    je 5f
    IVB_SPIN_WAIT 9f
    jmp 6f
5:
    IVB_HLT_WAIT 9f
6:
    mov IVB_ST_STAMP(%r15), %rax
    sub %r13, %rax              # our handler entry - t0: the round trip
    IVB_SAMPLE %rax
    IVB_EOI
8:
    dec %r14
    jnz 1b
9:
    IVB_DONE

# ---- irq_fixup_selftest: checks the handler's HLT step-over ------------------------
# The VMM enters here with interrupts enabled and vector 0x40 already pending: it is
# delivered before the HLT executes, with the saved RIP pointing at the HLT, exactly like
# an interrupt that lands between enabling interrupts and HLT in a wait loop. The handler
# must step over it (FIXUPS = 1) and the payload reach DONE.
# In: r15 = status area.
ivb_irq_fixup_selftest:
    hlt
    IVB_DONE
ivb_irq_end:

.purgem IVB_SEND_IPI
.purgem IVB_SPIN_WAIT
.purgem IVB_HLT_WAIT
"#
);

pub fn payload() -> Payload {
    Payload {
        name: "irq",
        start: sym_addr!(ivb_irq_start),
        end: sym_addr!(ivb_irq_end),
        entries: vec![
            (entry::IRQ_EXC_STUBS, sym_addr!(ivb_irq_exc_stubs)),
            (entry::IRQ_HANDLER, sym_addr!(ivb_irq_handler)),
            (entry::IRQ_KICK, sym_addr!(ivb_irq_kick)),
            (entry::IRQ_SPURIOUS, sym_addr!(ivb_irq_spurious)),
            (entry::IRQ_UNEXPECTED, sym_addr!(ivb_irq_unexpected)),
            (entry::IRQ_RECV, sym_addr!(ivb_irq_recv)),
            (entry::IPI_SEND, sym_addr!(ivb_ipi_send)),
            (entry::IRQ_FIXUP_SELFTEST, sym_addr!(ivb_irq_fixup_selftest)),
        ],
        hypercall_sites: vec![],
    }
}
