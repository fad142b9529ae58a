#!/usr/bin/env bash
# usage: emulated/run-qemu-amd.sh IMAGEDIR LOGFILE [TIMEOUT_SECONDS] [EXTRA_KERNEL_ARGS]
#
# Boots IMAGEDIR/vmlinuz + IMAGEDIR/initramfs.cpio.gz (from build-initramfs.sh) in QEMU TCG
# playing an AMD host with SVM and nested paging, so that the guest loads kvm_amd and
# ivbench runs on it. The serial console is written to LOGFILE (and echoed to stdout when
# IVBENCH_EMU_ECHO=1). No network, no display, no reboot: QEMU exits when the guest powers
# off, or is killed after TIMEOUT_SECONDS (default 600).
#
# IVBENCH_EMU_QEMU_CPU overrides the CPU model (default EPYC,+svm,+npt; `max` works too).
# IVBENCH_EMU_QEMU_SMP is the number of emulated CPUs (default 1). With icount, -smp 2
#   hangs the guest kernel at "x86: Booting SMP configuration" (seen with sleep=on and
#   sleep=off), so the two-vCPU probes report "unsupported: needs 2 host CPUs" here.
# IVBENCH_EMU_QEMU_ICOUNT is the -icount setting (default shift=0,sleep=off; empty: none).
#   Why icount: ivbench refuses VM probes whose guest runs a dec;jnz loop slower than 10
#   TSC cycles per iteration ("guest is being emulated"). Under plain TCG the guest TSC is
#   the host's, so that figure is the emulator's speed (7-11 was seen: flaky). With
#   shift=0 the TSC advances one tick per emulated instruction, so the loop reads exactly
#   2 cycles per iteration, every run. Guest time then runs slower than wall time (one
#   instruction = 1 ns); sleep=off makes idle periods jump instead of wait.
# Exit status: QEMU's (0 after a clean power-off), 124 on timeout.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -ge 2 ] || { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
IMG=$1; LOG=$2; TMO=${3:-600}; EXTRA=${4:-}
CPU=${IVBENCH_EMU_QEMU_CPU:-EPYC,+svm,+npt}
ICOUNT=${IVBENCH_EMU_QEMU_ICOUNT-shift=0,sleep=off}
SMP=${IVBENCH_EMU_QEMU_SMP:-1}
ICOUNT_ARGS=()
[ -n "$ICOUNT" ] && ICOUNT_ARGS=(-icount "$ICOUNT")

emu_need_cmds qemu-system-x86_64:qemu-system-x86 timeout:coreutils
for f in vmlinuz initramfs.cpio.gz; do [ -f "$IMG/$f" ] || emu_die "$IMG/$f missing (run build-initramfs.sh)"; done
mkdir -p "$(dirname "$LOG")"
: > "$LOG"

APPEND="console=ttyS0,115200 panic=-1 mitigations=off nokaslr $EXTRA"
emu_log "qemu-system-x86_64 -accel tcg ${ICOUNT_ARGS[*]} -cpu $CPU -smp $SMP (timeout ${TMO}s), console -> $LOG"
S=$(date +%s)
if [ "${IVBENCH_EMU_ECHO:-0}" = 1 ]; then TAIL_TO=/dev/stdout; else TAIL_TO=/dev/null; fi
# -serial stdio would put the console through QEMU's own terminal handling; a plain file
# is exact. -nodefaults drops the default NIC and VGA; -nic none makes "no network" explicit.
timeout -k 10 "$TMO" qemu-system-x86_64 \
    -accel tcg "${ICOUNT_ARGS[@]}" -cpu "$CPU" -m 1024 -smp "$SMP" \
    -nodefaults -nic none -display none -monitor none -vga none \
    -serial "file:$LOG" -no-reboot \
    -kernel "$IMG/vmlinuz" -initrd "$IMG/initramfs.cpio.gz" -append "$APPEND" \
    < /dev/null > "$LOG.qemu-stderr" 2>&1 &
QPID=$!
# If this script is stopped, stop QEMU too (timeout(1) passes SIGTERM on to it).
trap 'kill "$QPID" 2>/dev/null' EXIT INT TERM
if [ "$TAIL_TO" != /dev/null ]; then
    tail -n +1 -f "$LOG" --pid=$QPID > "$TAIL_TO" &
fi
wait $QPID
RC=$?
E=$(date +%s)
# "TCG doesn't support requested feature" warnings for the EPYC model are expected.
OTHER=$(grep -v "TCG doesn't support requested feature" "$LOG.qemu-stderr" | head -c 2000)
[ -n "$OTHER" ] && emu_log "qemu stderr: $OTHER"
emu_log "qemu exited rc=$RC after $((E - S))s"
exit $RC
