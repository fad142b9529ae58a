//! Payloads `path_gen`, `path_sink` (probe `path.a`) and `path_fwd` (the middle boxes of
//! `path.b` and `path.chain`): the two ends of the packet ring
//! of `packet_ring`, run inside two VMs whose memslots map one memfd. They do what
//! `packet_ring::traffic`'s Generator and Sink do in host threads, on the same ring layout
//! and the same frames (the ring and frame offsets below are `packet_ring`'s constants,
//! handed to the assembler as `const` operands, so the two cannot drift apart).
//!
//! Both keep `r9` = the path block ([`crate::abi::path`]: parameters in, counters out) and
//! `r15` = the vCPU's status area (STOP aborts; the interrupt handler stamps STAMP).
//!
//! `path_gen` (open loop): packet `n` is due at `T_FIRST + n * INTERVAL / 65536` (or at
//! once, INTERVAL = 0). Each step offers the packets due (up to BATCH), stamping them with
//! one `rdtsc`; a packet that finds the ring full is counted in DROPPED and never enters
//! it (the generator never waits for space); the others get the next sequence number, a
//! copy of their length's template, the stamp and the checksum. The head is published
//! when BATCH packets are unpublished, or when a step offered nothing. After each
//! publication the sender notifies as NOTIFY says: nothing (poll); a kick through
//! KICK_PORT when the sink armed its wake-up (hybrid, halt: KICK_PORT is an ioeventfd
//! wired to the sink VM's irqfd, no userspace on the way); an exit to its VMM on every
//! publication (exit: the VMM signals the sink when it sleeps, the vhost-like mediated
//! path). It stops after LIMIT packets (offered at a paced rate; entered the ring at max,
//! as `Generator::counted` says), DURATION cycles or STOP, publishes the rest, sets
//! the DONE control line and wakes a sleeping sink.
//!
//! `path_sink`: polls the head; takes up to BATCH frames, checks each descriptor's bounds,
//! copies the frame out in 16-byte words (ZERO_COPY = 0) or reads it in place, compares every byte with the
//! template of its length (16-byte SSE2 words; header and fill) and the checksum with the
//! sequence number and stamp, tracks sequence numbers (LOST, DUPLICATED, REORDERED over a
//! window of SEQ_WINDOW, missing numbers marked in SEQ_BITMAP), keeps every
//! one-way latency of the frames `packet_ring::traffic::sampled` picks (its rdtsc minus the
//! send stamp, wrapping: the VMM corrects for the two VMs' TSC offsets) at `rdi`,
//! then releases the slots. An empty ring: poll mode PAUSEs and polls again; hybrid keeps
//! polling for POLL_CYCLES, then halts; halt and exit halt at once. Halting: interrupts
//! off, SLEEP set, a full fence, the ring and DONE checked once more (the sender stores
//! the head, fences, then reads SLEEP: one of the two sees the other), then HLT with
//! interrupts on; the vector-0x40 handler stamps STAMP and steps over a HLT it interrupts.
//! Interrupts are off everywhere else, so every interrupt is taken in that window and
//! EOIed right after it (an interrupt left in service would block the next wake-up).
//! It ends when DONE was set before a poll that found the ring empty, on STOP, or when
//! the producer index runs more than a ring ahead (ERROR = 1).
//!
//! Every poll reads the TSC once: IDLE sums the cycles of polls that found nothing (and
//! of halts), and RECEIVED is recorded in MARKS every MARK_CYCLES.

use super::{asm_postlude, asm_prelude, entry, sym_addr, Payload};
use packet_ring::{frame, layout as ring};

core::arch::global_asm!(
    concat!(
        asm_prelude!(),
        r#"
.set IVB_RING_HEAD, {head}
.set IVB_RING_TAIL, {tail}
.set IVB_RING_DESC, {desc}
.set IVB_RING_BUF_SHIFT, {buf_shift}
.set IVB_FRAME_SEQ, {seq}
.set IVB_FRAME_TSC, {tsc}
.set IVB_FRAME_CSUM, {csum}
.set IVB_FRAME_FILL, {fill}
.set IVB_FRAME_SEQ_W, {seq_w}
.set IVB_FRAME_TSC_W, {tsc_w}
.set IVB_FRAME_MIN, {min_frame}
.set IVB_FRAME_MAX, {max_frame}
.set IVB_SAMPLE_HASH, {sample_hash}

# rax = TSC (clobbers rdx); not serialized: a stamp, not a measured interval.
.macro IVB_PATH_NOW
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
.endm

# Jumps to \skip unless the frame with sequence number \seq is one whose latency is sampled:
# bits 32.. of seq x SAMPLE_HASH under \mask are zero (`packet_ring::traffic::sampled`: a
# hash, so that the sampled frames do not alias with the IMIX length cycle). Clobbers rcx.
.macro IVB_PATH_SAMPLED seq, mask, skip
    movabs $IVB_SAMPLE_HASH, %rcx
    imul \seq, %rcx
    shr $32, %rcx
    and \mask, %rcx
    jnz \skip
.endm

# Enables interrupts and halts with nothing in between: an interrupt pending or arriving as
# interrupts come on is taken with the saved RIP at the HLT, which the vector-0x40 handler
# steps over (with sti, the STI shadow delays it to the HLT itself). Anything between the
# two would let an interrupt be taken there and the HLT then wait, its vector in service,
# for a wake-up that never comes. Uses rbx (VIF page or 0).
.macro IVB_PATH_IRQ_ON_HLT
    test %rbx, %rbx
    jz .Lion_sti\@
    movb $1, (%rbx)
    hlt
    jmp .Lion_end\@
.Lion_sti\@:
    sti
    hlt
.Lion_end\@:
.endm

# One halt of an armed consumer (interrupts off, SLEEP set and the inputs re-checked):
# counts it in \sleeps, halts with interrupts on (IVB_PATH_IRQ_ON_HLT), adds the cycles
# spent to \halted (\hlt_t is scratch), turns interrupts off again and, when our
# interrupt woke it (STAMP set), EOIs it and counts it in \wakes. Interrupts only ever
# arrive at that HLT, so every one is EOIed. Clobbers rax, rcx, rdx.
.macro IVB_PATH_HALT sleeps, wakes, hlt_t, halted
    movq $0, IVB_ST_STAMP(%r15)
    incq \sleeps
    IVB_PATH_NOW
    mov %rax, \hlt_t
    IVB_PATH_IRQ_ON_HLT
    IVB_PATH_NOW
    sub \hlt_t, %rax
    add %rax, \halted
    IVB_IRQ_OFF
    cmpq $0, IVB_ST_STAMP(%r15)
    je .Lhalt_end\@                     # woken without our interrupt: the caller looks again
    IVB_EOI
    incq \wakes
.Lhalt_end\@:
.endm

# After a head (or DONE) store into a ring: wake its consumer as \notify says (poll:
# nothing; exit: always exit to the VMM through \port; otherwise fence, and kick through
# \port only when the consumer armed SLEEP in the control lines at \ctrl, clearing it);
# counts the kicks in \kicks. Clobbers rax, rcx, rdx.
.macro IVB_PATH_KICK notify, ctrl, port, kicks
    mov \notify, %rax
    cmp $IVB_PATH_NOTIFY_POLL, %rax
    je .Lkick_end\@
    cmp $IVB_PATH_NOTIFY_EXIT, %rax
    je .Lkick_out\@
    mfence                              # head / DONE visible before SLEEP is read
    mov \ctrl, %rcx
    cmpq $0, IVB_CTRL_SLEEP(%rcx)
    je .Lkick_end\@
    movq $0, IVB_CTRL_SLEEP(%rcx)
.Lkick_out\@:
    mov \port, %rdx
    out %al, (%dx)
    incq \kicks
.Lkick_end\@:
.endm


# Generator, transport=vmfunc: VMFUNC leaf 0 into the view VIEW, which maps the ring and
# its control lines (nowhere else in this VM), this code, the path block and the stack
# page at their own addresses; nothing when VIEW = 0 (the ring is a memslot) or when this
# step already entered (S_IN_VIEW). A step enters at its first ring access, so a pacing
# step with nothing due stays outside. An exit taken inside the view (a kick) returns the
# vCPU to the default view: after a kick only the path block and the stack are touched
# until IVB_PATH_VIEW_LEAVE, whose VMFUNC to view 0 is then a no-op switch. Clobbers rax,
# rcx.
.macro IVB_PATH_VIEW_ENTER
    mov IVB_PATH_VIEW(%r9), %rcx
    test %rcx, %rcx
    jz .Lview_enter\@
    cmpq $0, IVB_PATH_S_IN_VIEW(%r9)
    jne .Lview_enter\@
    xor %eax, %eax
    vmfunc
    movq $1, IVB_PATH_S_IN_VIEW(%r9)
    incq IVB_PATH_VIEW_ENTRIES(%r9)
.Lview_enter\@:
.endm
.macro IVB_PATH_VIEW_LEAVE
    cmpq $0, IVB_PATH_S_IN_VIEW(%r9)
    je .Lview_leave\@
    xor %eax, %eax
    xor %ecx, %ecx
    vmfunc
    movq $0, IVB_PATH_S_IN_VIEW(%r9)
.Lview_leave\@:
.endm

# Jumps to \target once the packet budget LIMIT is reached: packets offered (rbx) at a
# paced rate, packets that entered the ring (r14) at max (`Generator::counted`).
.macro IVB_PATH_AT_LIMIT target
    cmpq $0, IVB_PATH_INTERVAL(%r9)
    jne .Llimit_sent\@
    cmp IVB_PATH_LIMIT(%r9), %r14
    jae \target
    jmp .Llimit_end\@
.Llimit_sent\@:
    cmp IVB_PATH_LIMIT(%r9), %rbx
    jae \target
.Llimit_end\@:
.endm

# Copies rcx bytes from rsi to rdi, rounded up to whole 16-byte words (so up to 15 bytes
# past the frame: buffers and the copy buffer have the room); advances rsi and rdi;
# clobbers rcx and xmm0. SSE2 moves: rep movs costs ~100 cycles more per 64-byte frame
# here (its start-up), which halved the copying sink's rate.
.macro IVB_PATH_COPY16
.Lcopy\@:
    movdqu (%rsi), %xmm0
    movdqu %xmm0, (%rdi)
    add $16, %rsi
    add $16, %rdi
    sub $16, %rcx
    ja .Lcopy\@
.endm

# Takes the descriptor of slot rax of the ring at \ring: rcx = the frame's length, rsi =
# its address; jumps to \bad when the length is not a frame's or the frame does not lie in
# [\lo, \hi) of the ring region (clobbers rax).
.macro IVB_PATH_DESC ring, lo, hi, bad
    mov IVB_RING_DESC(\ring,%rax,8), %rcx
    mov %ecx, %esi                      # offset
    shr $32, %rcx                       # length
    cmp $IVB_FRAME_MIN, %rcx
    jb \bad
    cmp $IVB_FRAME_MAX, %rcx
    ja \bad
    cmp \lo, %rsi
    jb \bad
    lea (%rsi,%rcx), %rax
    cmp \hi, %rax
    ja \bad
    add \ring, %rsi                     # the frame
.endm

.globl ivb_path_start
.globl ivb_path_end
.globl ivb_path_gen
.globl ivb_path_sink
.globl ivb_path_fwd
ivb_path_start:

# ---- path_gen -----------------------------------------------------------------------
# In: r9 = path block, r15 = status area.
# r10 ring, r11d head, r12d cached tail, r13d published head, r14 next sequence number,
# rbx sent, rbp T_FIRST, r8 next due time (cycles x 65536 since T_FIRST), rdx offered in
# this step.
ivb_path_gen:
    mov IVB_PATH_RING(%r9), %r10
    xor %r11d, %r11d
    xor %r12d, %r12d
    xor %r13d, %r13d
    xor %r14d, %r14d
    xor %ebx, %ebx
    xor %r8d, %r8d
    movq $0, IVB_PATH_S_CYCLE(%r9)
    IVB_PATH_NOW
    mov %rax, %rbp
    mov %rax, IVB_PATH_T_FIRST(%r9)
    mov %rax, IVB_PATH_S_PREV(%r9)
.Lg_top:
    cmpq $0, IVB_ST_STOP(%r15)
    jne .Lg_finish
    IVB_PATH_NOW
    mov %rax, IVB_PATH_S_NOW(%r9)
    mov %rax, %rcx
    sub %rbp, %rcx                      # cycles since T_FIRST
    mov IVB_PATH_DURATION(%r9), %rsi
    test %rsi, %rsi
    jz 1f
    cmp %rsi, %rcx
    jae .Lg_finish
1:
    shl $16, %rcx
    mov %rcx, IVB_PATH_S_ELAPSED(%r9)
    xor %edx, %edx
.Lg_offer:
    cmp IVB_PATH_BATCH(%r9), %rdx
    jae .Lg_step_end
    IVB_PATH_AT_LIMIT .Lg_step_end
    mov IVB_PATH_INTERVAL(%r9), %rax
    test %rax, %rax
    jz 2f
    cmp IVB_PATH_S_ELAPSED(%r9), %r8
    ja .Lg_step_end                     # the next packet is not due yet
    add %rax, %r8
2:
    IVB_PATH_VIEW_ENTER                 # transport=vmfunc: the ring is reachable from here
    inc %rbx                            # offered
    inc %rdx
    mov %r11d, %eax
    sub %r12d, %eax
    cmp IVB_PATH_MASK(%r9), %rax
    jbe .Lg_room                        # fewer than slots in use (cached tail)
    mov IVB_RING_TAIL(%r10), %r12d      # re-read the consumer's index
    mov %r11d, %eax
    sub %r12d, %eax
    cmp IVB_PATH_MASK(%r9), %rax
    jbe .Lg_room
    incq IVB_PATH_DROPPED(%r9)          # full: dropped, never waited for
    jmp .Lg_offer
.Lg_room:
    mov IVB_PATH_S_CYCLE(%r9), %rax     # this packet's entry of the length cycle
    lea (%rax,%rax,2), %rsi
    lea IVB_PATH_CYCLE(%r9,%rsi,8), %rsi
    inc %rax
    cmp IVB_PATH_NCYCLE(%r9), %rax
    jb 3f
    xor %eax, %eax
3:
    mov %rax, IVB_PATH_S_CYCLE(%r9)
    mov %r11d, %eax
    and IVB_PATH_MASK(%r9), %rax        # slot
    mov %rax, %rdi
    shl $IVB_RING_BUF_SHIFT, %rdi
    add IVB_PATH_BUF_LO(%r9), %rdi      # the slot's buffer, as an offset in the region
    mov IVB_PATH_ENTRY_LEN(%rsi), %rcx
    lea IVB_RING_DESC(%r10,%rax,8), %rax
    mov %edi, (%rax)                    # descriptor: offset, length
    mov %ecx, 4(%rax)
    mov %rsi, %rax                      # rax = cycle entry
    mov IVB_PATH_ENTRY_TEMPLATE(%rax), %rsi
    add %r10, %rdi
    push %rdi
    IVB_PATH_COPY16                     # the template
    pop %rdi
    mov %r14, IVB_FRAME_SEQ(%rdi)
    mov IVB_PATH_S_NOW(%r9), %rcx
    mov %rcx, IVB_FRAME_TSC(%rdi)
    imul $IVB_FRAME_TSC_W, %rcx, %rcx
    imul $IVB_FRAME_SEQ_W, %r14, %rsi
    add %rsi, %rcx
    add IVB_PATH_ENTRY_BASE(%rax), %rcx
    mov %rcx, IVB_FRAME_CSUM(%rdi)
    inc %r11d
    inc %r14
    jmp .Lg_offer
.Lg_step_end:
    mov %r11d, %eax
    sub %r13d, %eax                     # unpublished
    jz .Lg_account
    cmp IVB_PATH_BATCH(%r9), %rax
    jae 4f
    test %rdx, %rdx
    jnz .Lg_account                     # a partial batch waits while packets flow
4:
    IVB_PATH_VIEW_ENTER                 # (a batch left from an earlier step)
    mov %r11d, IVB_RING_HEAD(%r10)      # publish (x86 stores are release)
    mov %r11d, %r13d
    incq IVB_PATH_PUBLICATIONS(%r9)
    push %rdx
    IVB_PATH_KICK IVB_PATH_NOTIFY(%r9), IVB_PATH_CTRL(%r9), IVB_PATH_KICK_PORT(%r9), IVB_PATH_KICKS(%r9)
    pop %rdx
.Lg_account:
    IVB_PATH_VIEW_LEAVE                 # ... to here
    mov IVB_PATH_S_NOW(%r9), %rax
    test %rdx, %rdx
    jnz 5f
    mov %rax, %rcx                      # a step without a packet: pacing idle
    sub IVB_PATH_S_PREV(%r9), %rcx
    add %rcx, IVB_PATH_IDLE(%r9)
    pause
5:
    mov %rax, IVB_PATH_S_PREV(%r9)
    IVB_PATH_AT_LIMIT .Lg_finish
    jmp .Lg_top
.Lg_finish:
    IVB_PATH_VIEW_ENTER
    cmp %r13d, %r11d
    je 6f
    mov %r11d, IVB_RING_HEAD(%r10)
    mov %r11d, %r13d
    incq IVB_PATH_PUBLICATIONS(%r9)
6:
    mov IVB_PATH_CTRL(%r9), %rcx
    movq $1, IVB_CTRL_DONE(%rcx)
    IVB_PATH_KICK IVB_PATH_NOTIFY(%r9), IVB_PATH_CTRL(%r9), IVB_PATH_KICK_PORT(%r9), IVB_PATH_KICKS(%r9)
    IVB_PATH_VIEW_LEAVE
    mov %rbx, IVB_PATH_SENT(%r9)
    IVB_PATH_NOW
    mov %rax, IVB_PATH_T_LAST(%r9)
    IVB_DONE

# ---- path_sink ----------------------------------------------------------------------
# In: r9 = path block, r15 = status area, rdi = latency sample buffer.
# r10 ring, r11d tail, r12d cached head, r13 frames left in this poll, r14 next expected
# sequence number, rbp control lines, rbx VIF page or 0, rsi DONE as read before the poll.
ivb_path_sink:
    mov %rdi, IVB_PATH_S_SAMPLES(%r9)
    mov IVB_PATH_RING(%r9), %r10
    mov IVB_PATH_CTRL(%r9), %rbp
    mov IVB_PATH_VIF(%r9), %rbx
    xor %r11d, %r11d
    xor %r12d, %r12d
    xor %r14d, %r14d
    IVB_PATH_NOW
    mov %rax, IVB_PATH_T_FIRST(%r9)
    mov %rax, IVB_PATH_S_PREV(%r9)
    add IVB_PATH_MARK_CYCLES(%r9), %rax
    mov %rax, IVB_PATH_S_NEXT_MARK(%r9)
.Ls_top:
    mov IVB_CTRL_DONE(%rbp), %rsi       # DONE before the poll: then an empty poll is the end
    incq IVB_PATH_POLLS(%r9)
    mov %r12d, %eax
    sub %r11d, %eax
    jnz .Ls_have
    mov IVB_RING_HEAD(%r10), %r12d      # re-read the producer's index (x86 loads acquire)
    mov %r12d, %eax
    sub %r11d, %eax
    jz .Ls_empty
.Ls_have:
    mov IVB_PATH_MASK(%r9), %rcx
    inc %rcx
    cmp %rcx, %rax
    ja .Ls_overrun
    movq $0, IVB_PATH_S_EMPTY_RUN(%r9)
    mov IVB_PATH_BATCH(%r9), %r13
    cmp %r13, %rax
    cmovb %rax, %r13                    # min(available, batch)
    add %r13, IVB_PATH_RECEIVED(%r9)
.Ls_frame:
    mov %r11d, %eax
    and IVB_PATH_MASK(%r9), %eax
    IVB_PATH_DESC %r10, IVB_PATH_BUF_LO(%r9), IVB_PATH_BUF_HI(%r9), .Ls_corrupt
    cmpq $0, IVB_PATH_ZERO_COPY(%r9)
    jne .Ls_verify
    mov %rcx, %rdx
    lea IVB_PATH_COPY_BUF(%r9), %rdi
    IVB_PATH_COPY16                     # copy out
    mov %rdx, %rcx
    lea IVB_PATH_COPY_BUF(%r9), %rsi
.Ls_verify:
    lea IVB_PATH_KINDS(%r9), %rdx       # the template of this length
    mov IVB_PATH_NKINDS(%r9), %rax
7:
    test %rax, %rax
    jz .Ls_corrupt
    cmp IVB_PATH_ENTRY_LEN(%rdx), %rcx
    je 8f
    add $IVB_PATH_ENTRY_SIZE, %rdx
    dec %rax
    jmp 7b
8:
    mov IVB_PATH_ENTRY_TEMPLATE(%rdx), %rax
    movdqu (%rsi), %xmm1                # header and length field
    movdqu (%rax), %xmm2
    pxor %xmm2, %xmm1
    movdqu -16(%rsi,%rcx), %xmm0        # the last 16 bytes
    movdqu -16(%rax,%rcx), %xmm2
    pxor %xmm2, %xmm0
    por %xmm0, %xmm1
    sub $16, %rcx
    mov $IVB_FRAME_FILL, %edi
9:
    cmp %rcx, %rdi
    ja 10f
    movdqu (%rsi,%rdi), %xmm0           # the fill, 16 bytes at a time
    movdqu (%rax,%rdi), %xmm2
    pxor %xmm2, %xmm0
    por %xmm0, %xmm1
    add $16, %rdi
    jmp 9b
10:
    pxor %xmm3, %xmm3
    pcmpeqb %xmm3, %xmm1
    pmovmskb %xmm1, %edi
    cmp $0xffff, %edi
    jne .Ls_corrupt
    mov IVB_FRAME_SEQ(%rsi), %rax
    mov IVB_FRAME_TSC(%rsi), %r8
    imul $IVB_FRAME_SEQ_W, %rax, %rdi
    imul $IVB_FRAME_TSC_W, %r8, %rcx
    add %rcx, %rdi
    add IVB_PATH_ENTRY_BASE(%rdx), %rdi
    cmp IVB_FRAME_CSUM(%rsi), %rdi
    jne .Ls_corrupt
    # a good frame: rax = sequence number, r8 = send stamp
    cmp %r14, %rax
    jne .Ls_seq_other
    inc %r14
    cmpq $0, IVB_PATH_OUTSTANDING(%r9)
    je .Ls_latency
    call .Ls_expire                     # this slot's mark (SEQ_WINDOW numbers ago) expires
    jmp .Ls_latency
.Ls_seq_other:
    ja .Ls_seq_gap
    mov %r14, %rcx                      # behind the expected number
    sub %rax, %rcx
    cmp $IVB_PATH_SEQ_WINDOW, %rcx
    ja .Ls_dup
    call .Ls_bit
    btr %rcx, %rsi
    jnc .Ls_dup
    mov %rsi, IVB_PATH_SEQ_BITMAP(%r9,%rdi,8)
    decq IVB_PATH_OUTSTANDING(%r9)
    incq IVB_PATH_REORDERED(%r9)        # it was missing: late, not lost
    decq IVB_PATH_LOST(%r9)
    jmp .Ls_latency
.Ls_dup:
    incq IVB_PATH_DUPLICATED(%r9)
    jmp .Ls_latency
.Ls_seq_gap:
    mov %rax, %rcx
    sub %r14, %rcx                      # numbers skipped
    add %rcx, IVB_PATH_LOST(%r9)
    mov %r14, %rdx
    cmp $IVB_PATH_SEQ_WINDOW, %rcx
    jbe 11f
    lea -IVB_PATH_SEQ_WINDOW(%rax), %rdx  # only the window's worth can come late
11:
    cmp %rax, %rdx
    jae 12f
    push %rax
    mov %rdx, %rax
    call .Ls_bit
    bts %rcx, %rsi
    jc 13f
    incq IVB_PATH_OUTSTANDING(%r9)
13:
    mov %rsi, IVB_PATH_SEQ_BITMAP(%r9,%rdi,8)
    pop %rax
    inc %rdx
    jmp 11b
12:
    lea 1(%rax), %r14
    call .Ls_expire
.Ls_latency:
    IVB_PATH_SAMPLED %rax, IVB_PATH_STRIDE_MASK(%r9), .Ls_next
    mov IVB_PATH_NSAMPLES(%r9), %rcx
    cmp IVB_PATH_MAX_SAMPLES(%r9), %rcx
    jae .Ls_next
    IVB_PATH_NOW
    sub %r8, %rax                       # receive TSC - send stamp, wrapping: the VMM
                                        # corrects for the TSC offsets, then clamps
    mov IVB_PATH_S_SAMPLES(%r9), %rdx
    mov %rax, (%rdx,%rcx,8)
    inc %rcx
    mov %rcx, IVB_PATH_NSAMPLES(%r9)
    jmp .Ls_next
.Ls_corrupt:
    incq IVB_PATH_CORRUPTED(%r9)
.Ls_next:
    inc %r11d
    dec %r13
    jnz .Ls_frame
    mov %r11d, IVB_RING_TAIL(%r10)      # release the slots
    incq IVB_PATH_PUBLICATIONS(%r9)
    mov IVB_PATH_SINK_DELAY(%r9), %rcx
    test %rcx, %rcx
    jz 20f
    IVB_PATH_NOW                        # a deliberately slow sink (tests)
    mov %rax, %rsi
19:
    pause
    IVB_PATH_NOW
    sub %rsi, %rax
    cmp %rcx, %rax
    jb 19b
20:
    xor %esi, %esi                      # this poll found work
    jmp .Ls_tick
.Ls_empty:
    incq IVB_PATH_EMPTY_POLLS(%r9)
    test %rsi, %rsi
    jnz .Ls_finish                      # DONE before an empty poll: drained
    cmpq $0, IVB_ST_STOP(%r15)
    jne .Ls_finish
    mov $1, %esi
.Ls_tick:
    # rsi = 1 after an empty poll. Accounts the poll's time, records the marks, and
    # decides how an empty ring is waited for.
    IVB_PATH_NOW
    test %rsi, %rsi
    jz 15f
    mov %rax, %rcx
    sub IVB_PATH_S_PREV(%r9), %rcx
    add %rcx, IVB_PATH_IDLE(%r9)
15:
    mov %rax, IVB_PATH_S_PREV(%r9)
    cmp IVB_PATH_S_NEXT_MARK(%r9), %rax
    jb 16f
    mov IVB_PATH_NMARKS(%r9), %rcx
    cmp $IVB_PATH_MAX_MARKS, %rcx
    jae 16f
    mov IVB_PATH_RECEIVED(%r9), %rdx
    mov %rdx, IVB_PATH_MARKS(%r9,%rcx,8)
    incq IVB_PATH_NMARKS(%r9)
    mov IVB_PATH_MARK_CYCLES(%r9), %rdx
    add %rdx, IVB_PATH_S_NEXT_MARK(%r9)
16:
    test %rsi, %rsi
    jz .Ls_top
    mov IVB_PATH_NOTIFY(%r9), %rcx
    cmp $IVB_PATH_NOTIFY_POLL, %rcx
    je .Ls_pause
    cmp $IVB_PATH_NOTIFY_HYBRID, %rcx
    jne .Ls_sleep
    mov IVB_PATH_S_EMPTY_RUN(%r9), %rcx
    test %rcx, %rcx
    jnz 17f
    mov %rax, IVB_PATH_S_EMPTY_RUN(%r9)  # the first empty poll of a run
    jmp .Ls_pause
17:
    sub %rcx, %rax
    cmp IVB_PATH_POLL_CYCLES(%r9), %rax
    jae .Ls_sleep
.Ls_pause:
    pause
    jmp .Ls_top
.Ls_sleep:
    IVB_IRQ_OFF
    movq $1, IVB_CTRL_SLEEP(%rbp)       # arm the wake-up
    mfence                              # SLEEP visible before the ring is read again
    mov IVB_RING_HEAD(%r10), %r12d
    cmp %r11d, %r12d
    jne .Ls_disarm
    cmpq $0, IVB_CTRL_DONE(%rbp)
    jne .Ls_disarm
    cmpq $0, IVB_ST_STOP(%r15)
    jne .Ls_disarm
    IVB_PATH_HALT IVB_PATH_SLEEPS(%r9), IVB_PATH_WAKES(%r9), IVB_PATH_S_HLT_T(%r9), IVB_PATH_HALTED(%r9)
.Ls_disarm:
    movq $0, IVB_CTRL_SLEEP(%rbp)
    movq $0, IVB_PATH_S_EMPTY_RUN(%r9)
    IVB_PATH_NOW                        # the time since the last poll was idle, halted or not
    mov %rax, %rcx
    sub IVB_PATH_S_PREV(%r9), %rcx
    add %rcx, IVB_PATH_IDLE(%r9)
    mov %rax, IVB_PATH_S_PREV(%r9)
    jmp .Ls_top
.Ls_overrun:
    movq $1, IVB_PATH_ERROR(%r9)
.Ls_finish:
    mov %r14, IVB_PATH_NEXT_SEQ(%r9)
    IVB_PATH_NOW
    mov %rax, IVB_PATH_T_LAST(%r9)
    IVB_DONE

# rax = a sequence number -> rdi = its bitmap word index, rcx = its bit, rsi = the word.
.Ls_bit:
    mov %rax, %rcx
    and $(IVB_PATH_SEQ_WINDOW - 1), %rcx
    mov %rcx, %rdi
    shr $6, %rdi
    and $63, %ecx
    mov IVB_PATH_SEQ_BITMAP(%r9,%rdi,8), %rsi
    ret

# rax = a sequence number just taken in order: clears the mark of its bitmap slot, which
# belonged to the number SEQ_WINDOW before it (now out of the window).
.Ls_expire:
    call .Ls_bit
    btr %rcx, %rsi
    jnc 18f
    mov %rsi, IVB_PATH_SEQ_BITMAP(%r9,%rdi,8)
    decq IVB_PATH_OUTSTANDING(%r9)
18:
    ret
# ---- path_fwd -----------------------------------------------------------------------
# A middle box: the switch VM0 of path.b, or one box of path.chain. Each round polls the
# input of every port (up to BATCH frames each), looks every frame's destination MAC up
# in the ports' MACs (the static forwarding table), copies it into that port's output
# ring (a full output ring drops the frame there and never blocks the other ports),
# rewrites its source MAC (the header touch), samples the cumulative one-way latency as
# the sink does, releases the input slots, then publishes every output with new frames
# and wakes its consumer as NOTIFY says. An idle round waits as the sink does, arming
# SLEEP on every input. When every input is done and drained it sets DONE on every
# output and ends.
# In: r9 = forwarder block, r15 = status area, rdi = latency sample buffer.
# r12 the input port's record, r13 the output port's record, r14 frames left in this
# poll, rbp the input ring, rbx VIF page or 0, r10 frames taken this round, r11 ports left.
ivb_path_fwd:
    mov %rdi, IVB_FWD_S_SAMPLES(%r9)
    mov IVB_FWD_VIF(%r9), %rbx
    IVB_PATH_NOW
    mov %rax, IVB_FWD_T_FIRST(%r9)
    mov %rax, IVB_FWD_S_PREV(%r9)
.Lf_top:
    incq IVB_FWD_POLLS(%r9)
    xor %r10d, %r10d
    movq $1, IVB_FWD_S_ALL_DONE(%r9)
    lea IVB_FWD_PORTS(%r9), %r12
    mov IVB_FWD_NPORTS(%r9), %r11
.Lf_port:
    test %r11, %r11
    jz .Lf_round_end
    mov IVB_FWD_P_IN_RING(%r12), %rbp
    test %rbp, %rbp
    jz .Lf_port_next
    cmpq $0, IVB_FWD_P_IN_DONE(%r12)
    jne .Lf_port_next
    mov IVB_FWD_P_IN_CTRL(%r12), %rax
    mov IVB_CTRL_DONE(%rax), %rsi       # DONE before the poll
    mov IVB_FWD_P_IN_HEAD(%r12), %eax
    sub IVB_FWD_P_IN_TAIL(%r12), %eax
    jnz .Lf_have
    mov IVB_RING_HEAD(%rbp), %eax       # re-read the producer's index
    mov %eax, IVB_FWD_P_IN_HEAD(%r12)
    sub IVB_FWD_P_IN_TAIL(%r12), %eax
    jnz .Lf_have
    test %rsi, %rsi
    jz 1f
    movq $1, IVB_FWD_P_IN_DONE(%r12)    # done and drained
    jmp .Lf_port_next
1:
    movq $0, IVB_FWD_S_ALL_DONE(%r9)
    jmp .Lf_port_next
.Lf_have:
    movq $0, IVB_FWD_S_ALL_DONE(%r9)
    mov IVB_FWD_P_IN_MASK(%r12), %rcx
    inc %rcx
    cmp %rcx, %rax
    ja .Lf_overrun
    mov IVB_FWD_BATCH(%r9), %r14
    cmp %r14, %rax
    cmovb %rax, %r14
    add %r14, %r10
.Lf_frame:
    incq IVB_FWD_P_RX(%r12)
    mov IVB_FWD_P_IN_TAIL(%r12), %eax
    and IVB_FWD_P_IN_MASK(%r12), %eax
    IVB_PATH_DESC %rbp, IVB_FWD_P_IN_BUF_LO(%r12), IVB_FWD_P_IN_BUF_HI(%r12), .Lf_corrupt
    mov (%rsi), %rax
    shl $16, %rax                       # destination MAC (bytes 0..5) in the top 48 bits
    lea IVB_FWD_PORTS(%r9), %r13
    mov IVB_FWD_NPORTS(%r9), %rdx
2:
    mov IVB_FWD_P_MAC(%r13), %rdi
    shl $16, %rdi
    cmp %rdi, %rax
    je 3f
    add $IVB_FWD_PORT_SIZE, %r13
    dec %rdx
    jnz 2b
    jmp .Lf_unknown
3:
    mov IVB_FWD_P_OUT_RING(%r13), %rdx
    test %rdx, %rdx
    jz .Lf_unknown
    mov IVB_FWD_P_OUT_HEAD(%r13), %eax
    sub IVB_FWD_P_OUT_TAIL(%r13), %eax
    cmp IVB_FWD_P_OUT_MASK(%r13), %rax
    jbe 4f
    mov IVB_RING_TAIL(%rdx), %eax       # re-read the consumer's index
    mov %eax, IVB_FWD_P_OUT_TAIL(%r13)
    mov IVB_FWD_P_OUT_HEAD(%r13), %eax
    sub IVB_FWD_P_OUT_TAIL(%r13), %eax
    cmp IVB_FWD_P_OUT_MASK(%r13), %rax
    jbe 4f
    incq IVB_FWD_P_DROP_FULL(%r13)      # output full: dropped here, never waited for
    jmp .Lf_next
4:
    mov IVB_FWD_P_OUT_HEAD(%r13), %eax
    and IVB_FWD_P_OUT_MASK(%r13), %eax  # output slot
    mov %rax, %rdi
    shl $IVB_RING_BUF_SHIFT, %rdi
    add IVB_FWD_P_OUT_BUF_LO(%r13), %rdi
    lea IVB_RING_DESC(%rdx,%rax,8), %rax
    mov %edi, (%rax)                    # descriptor: offset, length
    mov %ecx, 4(%rax)
    add %rdx, %rdi                      # the output buffer
    push %rdi
    IVB_PATH_COPY16
    pop %rdi
    mov IVB_FWD_SRC_MAC(%r9), %rax      # the header touch: this box's source MAC
    mov %eax, 6(%rdi)
    shr $32, %rax
    mov %ax, 10(%rdi)
    incl IVB_FWD_P_OUT_HEAD(%r13)
    incq IVB_FWD_P_TX(%r13)
    mov IVB_FRAME_SEQ(%rdi), %rax
    IVB_PATH_SAMPLED %rax, IVB_FWD_STRIDE_MASK(%r9), .Lf_next
    mov IVB_FWD_NSAMPLES(%r9), %rcx
    cmp IVB_FWD_MAX_SAMPLES(%r9), %rcx
    jae .Lf_next
    mov IVB_FRAME_TSC(%rdi), %r8
    IVB_PATH_NOW
    sub %r8, %rax                       # this hop's TSC - the generator's stamp (wrapping)
    mov IVB_FWD_S_SAMPLES(%r9), %rdx
    mov %rax, (%rdx,%rcx,8)
    incq IVB_FWD_NSAMPLES(%r9)
    jmp .Lf_next
.Lf_unknown:
    incq IVB_FWD_P_DROP_UNKNOWN(%r12)
    jmp .Lf_next
.Lf_corrupt:
    incq IVB_FWD_P_CORRUPT(%r12)
.Lf_next:
    incl IVB_FWD_P_IN_TAIL(%r12)
    dec %r14
    jnz .Lf_frame
    mov IVB_FWD_P_IN_TAIL(%r12), %eax
    mov %eax, IVB_RING_TAIL(%rbp)       # release the input slots
    call .Lf_publish
.Lf_port_next:
    add $IVB_FWD_PORT_SIZE, %r12
    dec %r11
    jmp .Lf_port
.Lf_round_end:
    cmpq $0, IVB_FWD_S_ALL_DONE(%r9)
    jne .Lf_all_done
    cmpq $0, IVB_ST_STOP(%r15)
    jne .Lf_all_done                    # stopped: pass DONE on all the same
    IVB_PATH_NOW
    test %r10, %r10
    jnz 6f
    incq IVB_FWD_EMPTY_POLLS(%r9)
    mov %rax, %rcx
    sub IVB_FWD_S_PREV(%r9), %rcx
    add %rcx, IVB_FWD_IDLE(%r9)
    mov %rax, IVB_FWD_S_PREV(%r9)
    jmp .Lf_wait
6:
    mov %rax, IVB_FWD_S_PREV(%r9)
    movq $0, IVB_FWD_S_EMPTY_RUN(%r9)
    jmp .Lf_top
.Lf_wait:
    mov IVB_FWD_NOTIFY(%r9), %rcx
    cmp $IVB_PATH_NOTIFY_POLL, %rcx
    je .Lf_pause
    cmp $IVB_PATH_NOTIFY_HYBRID, %rcx
    jne .Lf_sleep
    mov IVB_FWD_S_EMPTY_RUN(%r9), %rcx
    test %rcx, %rcx
    jnz 7f
    mov %rax, IVB_FWD_S_EMPTY_RUN(%r9)
    jmp .Lf_pause
7:
    sub %rcx, %rax
    cmp IVB_FWD_POLL_CYCLES(%r9), %rax
    jae .Lf_sleep
.Lf_pause:
    pause
    jmp .Lf_top
.Lf_sleep:
    IVB_IRQ_OFF
    mov $1, %esi
    call .Lf_arm                        # SLEEP on every input
    mfence                              # visible before the inputs are read again
    call .Lf_any_input
    test %rax, %rax
    jnz .Lf_disarm
    cmpq $0, IVB_ST_STOP(%r15)
    jne .Lf_disarm
    IVB_PATH_HALT IVB_FWD_SLEEPS(%r9), IVB_FWD_WAKES(%r9), IVB_FWD_S_HLT_T(%r9), IVB_FWD_HALTED(%r9)
.Lf_disarm:
    xor %esi, %esi
    call .Lf_arm
    movq $0, IVB_FWD_S_EMPTY_RUN(%r9)
    IVB_PATH_NOW                        # the time since the last round was idle
    mov %rax, %rcx
    sub IVB_FWD_S_PREV(%r9), %rcx
    add %rcx, IVB_FWD_IDLE(%r9)
    mov %rax, IVB_FWD_S_PREV(%r9)
    jmp .Lf_top
.Lf_all_done:
    lea IVB_FWD_PORTS(%r9), %r13        # DONE on every output, sleeping consumers woken
    mov IVB_FWD_NPORTS(%r9), %r11
9:
    mov IVB_FWD_P_OUT_CTRL(%r13), %rax
    cmpq $0, IVB_FWD_P_OUT_RING(%r13)
    je 10f
    movq $1, IVB_CTRL_DONE(%rax)
    IVB_PATH_KICK IVB_FWD_NOTIFY(%r9), IVB_FWD_P_OUT_CTRL(%r13), IVB_FWD_P_KICK_PORT(%r13), IVB_FWD_KICKS(%r9)
10:
    add $IVB_FWD_PORT_SIZE, %r13
    dec %r11
    jnz 9b
.Lf_finish:
    IVB_PATH_NOW
    mov %rax, IVB_FWD_T_LAST(%r9)
    IVB_DONE
.Lf_overrun:
    movq $1, IVB_FWD_ERROR(%r9)
    jmp .Lf_all_done                    # the consumers downstream end too

# Publishes every output with frames not yet published, waking its consumer.
.Lf_publish:
    push %r13
    push %r11
    lea IVB_FWD_PORTS(%r9), %r13
    mov IVB_FWD_NPORTS(%r9), %r11
11:
    mov IVB_FWD_P_OUT_RING(%r13), %rcx
    test %rcx, %rcx
    jz 12f
    mov IVB_FWD_P_OUT_HEAD(%r13), %eax
    cmp IVB_FWD_P_OUT_PUBLISHED(%r13), %eax
    je 12f
    mov %eax, IVB_RING_HEAD(%rcx)       # publish (x86 stores are release)
    mov %eax, IVB_FWD_P_OUT_PUBLISHED(%r13)
    IVB_PATH_KICK IVB_FWD_NOTIFY(%r9), IVB_FWD_P_OUT_CTRL(%r13), IVB_FWD_P_KICK_PORT(%r13), IVB_FWD_KICKS(%r9)
12:
    add $IVB_FWD_PORT_SIZE, %r13
    dec %r11
    jnz 11b
    pop %r11
    pop %r13
    ret

# rsi -> the SLEEP word of every input's control lines (clobbers rax, rcx, rdx).
.Lf_arm:
    lea IVB_FWD_PORTS(%r9), %rcx
    mov IVB_FWD_NPORTS(%r9), %rax
13:
    cmpq $0, IVB_FWD_P_IN_RING(%rcx)
    je 14f
    mov IVB_FWD_P_IN_CTRL(%rcx), %rdx
    mov %rsi, IVB_CTRL_SLEEP(%rdx)
14:
    add $IVB_FWD_PORT_SIZE, %rcx
    dec %rax
    jnz 13b
    ret

# rax = 1 when an input not yet done has frames or DONE (clobbers rcx, rdx, rdi).
.Lf_any_input:
    lea IVB_FWD_PORTS(%r9), %rcx
    mov IVB_FWD_NPORTS(%r9), %rdi
15:
    cmpq $0, IVB_FWD_P_IN_RING(%rcx)
    je 16f
    cmpq $0, IVB_FWD_P_IN_DONE(%rcx)
    jne 16f
    mov IVB_FWD_P_IN_RING(%rcx), %rdx
    mov IVB_RING_HEAD(%rdx), %eax
    cmp IVB_FWD_P_IN_TAIL(%rcx), %eax
    jne 17f
    mov IVB_FWD_P_IN_CTRL(%rcx), %rdx
    cmpq $0, IVB_CTRL_DONE(%rdx)
    jne 17f
16:
    add $IVB_FWD_PORT_SIZE, %rcx
    dec %rdi
    jnz 15b
    xor %eax, %eax
    ret
17:
    mov $1, %eax
    ret
ivb_path_end:

.purgem IVB_PATH_NOW
.purgem IVB_PATH_KICK
.purgem IVB_PATH_AT_LIMIT
.purgem IVB_PATH_COPY16
.purgem IVB_PATH_DESC
.purgem IVB_PATH_IRQ_ON_HLT
.purgem IVB_PATH_HALT
.purgem IVB_PATH_SAMPLED
.purgem IVB_PATH_VIEW_ENTER
.purgem IVB_PATH_VIEW_LEAVE
"#,
        asm_postlude!()
    ),
    head = const ring::HEAD_OFFSET,
    tail = const ring::TAIL_OFFSET,
    desc = const ring::DESC_OFFSET,
    buf_shift = const ring::BUF_SIZE.trailing_zeros(),
    seq = const frame::SEQ_OFFSET,
    tsc = const frame::TSC_OFFSET,
    csum = const frame::CSUM_OFFSET,
    fill = const frame::FILL_OFFSET,
    seq_w = const frame::SEQ_WEIGHT,
    tsc_w = const frame::TSC_WEIGHT,
    min_frame = const frame::MIN_FRAME,
    max_frame = const frame::MAX_FRAME,
    sample_hash = const packet_ring::traffic::SAMPLE_HASH,
    options(att_syntax)
);

// The assembly relies on these facts of the ring and the frames.
const _: () = {
    assert!(ring::BUF_SIZE.is_power_of_two());
    assert!(ring::DESC_SIZE == 8 && ring::DESC_OFFSET_FIELD == 0 && ring::DESC_LEN_FIELD == 4);
    // the 16-byte header compare covers MACs, ethertype and the length field; the last
    // 16 bytes of the smallest frame lie in the fill
    assert!(frame::SEQ_OFFSET == 16 && frame::MIN_FRAME - 16 >= frame::FILL_OFFSET);
    // imul takes a 32-bit immediate
    assert!(frame::SEQ_WEIGHT < (1 << 31) && frame::TSC_WEIGHT < (1 << 31));
};

pub fn payload() -> Payload {
    Payload {
        name: "path",
        start: sym_addr!(ivb_path_start),
        end: sym_addr!(ivb_path_end),
        entries: vec![
            (entry::PATH_GEN, sym_addr!(ivb_path_gen)),
            (entry::PATH_SINK, sym_addr!(ivb_path_sink)),
            (entry::PATH_FWD, sym_addr!(ivb_path_fwd)),
        ],
        hypercall_sites: vec![],
    }
}
