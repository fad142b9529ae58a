//! Shared-memory notification payloads (probes `vm.notify.poll`, `vm.notify.poll-intervm`,
//! `vm.notify.mwait`). No interrupts, no exits: two vCPUs (of one VM, or of two VMs whose
//! memslots map one memfd) talk through two cache lines at `r10`:
//! `0(%r10)` = ping (written only by the initiator), `IVB_LINE_PONG(%r10)` = pong (only by the
//! responder). `r15` = the vCPU's status area (layout of `payloads::irq`: 0x08 COUNT,
//! 0x10 READY, 0x20 STOP, 0x28 EARLY, 0x50 MWAITS).

use super::{asm_postlude, asm_prelude, entry, guest_payload, sym_addr, Payload};

guest_payload!(
    r#"
.globl ivb_notify_start
.globl ivb_notify_end
.globl ivb_poll_ping
.globl ivb_poll_pong
.globl ivb_mwait_recv
.globl ivb_notify_store
ivb_notify_start:

# ---- poll_ping: times the PAUSE-loop ping-pong round trip ---------------------------
# Per operation: ping = ping + 1, then spin (PAUSE) until the responder echoes it in
# pong. The sample loop times r8 round trips per sample (per-op: 1).
# In: rdi = sample buffer, rsi = samples, r8 = round trips per sample, r10 = lines,
#     r15 = status area (STOP aborts: the sample count then comes out short).
ivb_poll_ping:
    IVB_LOOP_BEGIN
    mov IVB_LINE_PING(%r10), %rax
    inc %rax
    mov %rax, IVB_LINE_PING(%r10)           # ping
1:
    cmp %rax, IVB_LINE_PONG(%r10)          # echoed?
    je 2f
    pause
    cmpq $0, IVB_ST_STOP(%r15)
    je 1b
    IVB_DONE
2:
    IVB_LOOP_END
    IVB_DONE

# ---- poll_pong: the responder -------------------------------------------------------
# Echoes every new ping value into pong (PAUSE loop) until STOP; counts echoes in COUNT.
# In: r10 = lines, r15 = status area.
ivb_poll_pong:
    mov IVB_LINE_PONG(%r10), %rcx          # last value echoed
1:
    mov IVB_LINE_PING(%r10), %rax
    cmp %rcx, %rax
    jne 2f
    cmpq $0, IVB_ST_STOP(%r15)
    jne 3f
    pause
    jmp 1b
2:
    mov %rax, IVB_LINE_PONG(%r10)          # pong
    mov %rax, %rcx
    incq IVB_ST_COUNT(%r15)             # COUNT
    jmp 1b
3:
    IVB_DONE

# ---- mwait_recv: times the MONITOR/MWAIT wake-up ------------------------------------
# Per sample: clear the line, READY = 1, then MONITOR the line and MWAIT until the sender
# stores its lfence;rdtsc stamp there. Sample = our lfence;rdtsc after the wake - stamp.
# Needs MWAIT exits disabled (KVM_CAP_X86_DISABLE_EXITS, MWAIT) and a CPU with MONITOR.
# In: rdi = sample buffer, rsi = samples, r11 = monitored line, r15 = status area.
ivb_mwait_recv:
    mov %rsi, %r14
1:
    movq $0, (%r11)
    movq $1, IVB_ST_READY(%r15)         # READY
2:
    mov %r11, %rax
    xor %ecx, %ecx
    xor %edx, %edx
    monitor                     # address rax, extensions ecx, hints edx
    cmpq $0, (%r11)             # stored before the monitor was armed?
    jne 4f
    cmpq $0, IVB_ST_STOP(%r15)
    jne 9f
    incq IVB_ST_MWAITS(%r15)             # MWAITS
    xor %eax, %eax              # C1, no extensions
    xor %ecx, %ecx
    mwait                       # hints eax, extensions ecx
    cmpq $0, (%r11)
    jne 4f
    incq IVB_ST_EARLY(%r15)             # EARLY: woke with nothing stored
    jmp 2b
4:
    IVB_TSC %rax
    sub (%r11), %rax            # wake-up - sender's stamp
    IVB_SAMPLE %rax
    dec %r14
    jnz 1b
9:
    IVB_DONE

# ---- notify_store: the sender for mwait_recv ------------------------------------------
# Per sample: wait until the peer is READY, clear it, wait r9 cycles (so that the peer is
# in MWAIT), then store lfence;rdtsc into the monitored line (the store is the wake-up).
# In: rsi = samples, r9 = delay cycles, r10 = peer's status area, r11 = line,
#     r15 = own status area.
ivb_notify_store:
    mov %rsi, %r14
1:
    IVB_POLL_SET IVB_ST_READY(%r10), 9f # peer READY?
    movq $0, IVB_ST_READY(%r10)
    IVB_DELAY %r9
    IVB_TSC %rax
    mov %rax, (%r11)            # the wake-up store
    dec %r14
    jnz 1b
9:
    IVB_DONE
ivb_notify_end:
"#
);

pub fn payload() -> Payload {
    Payload {
        name: "notify",
        start: sym_addr!(ivb_notify_start),
        end: sym_addr!(ivb_notify_end),
        entries: vec![
            (entry::POLL_PING, sym_addr!(ivb_poll_ping)),
            (entry::POLL_PONG, sym_addr!(ivb_poll_pong)),
            (entry::MWAIT_RECV, sym_addr!(ivb_mwait_recv)),
            (entry::NOTIFY_STORE, sym_addr!(ivb_notify_store)),
        ],
        hypercall_sites: vec![],
    }
}
