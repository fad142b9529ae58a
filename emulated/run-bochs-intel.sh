#!/usr/bin/env bash
# usage: emulated/run-bochs-intel.sh IMAGEDIR LOGFILE [TIMEOUT_SECONDS] [EXTRA_KERNEL_ARGS]
#
# Boots IMAGEDIR/vmlinuz + IMAGEDIR/initramfs.cpio.gz (from build-initramfs.sh) in Bochs
# playing an Intel Skylake-X host with VMX, EPT, VPID, unrestricted guest and VMFUNC, so
# that the guest loads kvm_intel and ivbench runs on it. Bochs cannot boot a bzImage
# directly, so a bootable ISO is made first (grub-mkrescue; the kernel command line,
# including EXTRA_KERNEL_ARGS, is baked into its grub.cfg). The serial console goes to
# LOGFILE. Bochs is single-threaded and slow: a boot plus a tiny ivbench run takes minutes.
#
# Debian's Bochs has no `nogui` display and has its internal debugger built in, so it runs
# with `display_library: term` inside a pseudo terminal made by script(1) (the screen
# output goes to LOGFILE.screen and can be ignored) and a debugger rc file that says `c`
# (continue). Bochs ignores SIGTERM: `timeout -k` follows up with SIGKILL.
#
# IVBENCH_EMU_BOCHS_CPU overrides the CPU model (default corei7_skylake_x; haswell also
# has VMX; icelake/tigerlake need clearcpuid=fsrm in EXTRA_KERNEL_ARGS).
# IVBENCH_EMU_BOCHS_SMP is the number of emulated CPUs (default 1).
# IVBENCH_EMU_BOCHS_IPS sets Bochs' instructions per emulated second (default 50000000).
# Exit status: 0 when the guest reached the end marker of init, 124 on timeout, else 1.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -ge 2 ] || { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
IMG=$1; LOG=$2; TMO=${3:-2400}; EXTRA=${4:-}
MODEL=${IVBENCH_EMU_BOCHS_CPU:-corei7_skylake_x}
IPS=${IVBENCH_EMU_BOCHS_IPS:-50000000}
SMP=${IVBENCH_EMU_BOCHS_SMP:-1}

emu_need_cmds bochs-bin:bochs grub-mkrescue:grub-common xorriso:xorriso mformat:mtools \
    script:bsdutils timeout:coreutils
emu_need_files /usr/share/bochs/BIOS-bochs-latest:bochsbios /usr/share/vgabios/vgabios.bin:vgabios \
    /usr/lib/grub/i386-pc/cdboot.img:grub-pc-bin \
    /usr/lib/x86_64-linux-gnu/bochs/plugins/libbx_term_gui.so:bochs-term
for f in vmlinuz initramfs.cpio.gz; do [ -f "$IMG/$f" ] || emu_die "$IMG/$f missing (run build-initramfs.sh)"; done
mkdir -p "$(dirname "$LOG")"
LOG=$(cd "$(dirname "$LOG")" && pwd)/$(basename "$LOG")
: > "$LOG"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# 1. Bootable ISO: GRUB (BIOS, El Torito) with the serial console, no menu delay.
CMDLINE="console=ttyS0,115200 panic=-1 mitigations=off nokaslr $EXTRA"
mkdir -p "$WORK/iso/boot/grub"
cp "$IMG/vmlinuz" "$IMG/initramfs.cpio.gz" "$WORK/iso/boot/"
cat > "$WORK/iso/boot/grub/grub.cfg" <<EOF
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
set default=0
menuentry "ivbench emulated intel host" {
  echo "GRUB: loading kernel"
  linux /boot/vmlinuz $CMDLINE
  echo "GRUB: loading initrd"
  initrd /boot/initramfs.cpio.gz
  echo "GRUB: booting"
  boot
}
EOF
# Only the BIOS platform: Bochs boots the El Torito image; xz keeps GRUB's core small.
grub-mkrescue -o "$WORK/boot.iso" --compress=xz -d /usr/lib/grub/i386-pc "$WORK/iso" -- -volid IVBENCH \
    > "$WORK/grub-mkrescue.log" 2>&1 || { cat "$WORK/grub-mkrescue.log" >&2; emu_die "grub-mkrescue failed"; }

# 2. Bochs configuration. reset_on_triple_fault=0 would hang; 1 resets, and a reset boots
# GRUB again: the end marker check below is what decides success.
cat > "$WORK/bochsrc" <<EOF
cpu: model=$MODEL, count=$SMP, ips=$IPS, reset_on_triple_fault=1
memory: guest=1024, host=1024
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/vgabios/vgabios.bin
pci: enabled=1, chipset=i440fx
ata0: enabled=1, ioaddr1=0x1f0, ioaddr2=0x3f0, irq=14
ata0-master: type=cdrom, path=$WORK/boot.iso, status=inserted
boot: cdrom
floppy_bootsig_check: disabled=0
com1: enabled=1, mode=file, dev=$LOG
display_library: term
clock: sync=none, time0=local
log: $LOG.bochs
panic: action=fatal
error: action=report
info: action=ignore
debug: action=ignore
mouse: enabled=0
speaker: enabled=0
# Without a sound card, Bochs' ALSA mixer thread aborts ("buffer overflow detected").
sound: driver=dummy
EOF
printf 'c\nquit\n' > "$WORK/debugger.rc"

emu_log "bochs cpu=$MODEL ips=$IPS (timeout ${TMO}s), console -> $LOG"
S=$(date +%s)
# When init powers off, Bochs stops the simulation and the debugger rc says `quit`.
# The watcher below also stops it (by PID: SIGINT to timeout(1), which then sends SIGTERM
# and, 10 s later, SIGKILL to Bochs) once the end marker has been on the console for a
# while, so a guest that fails to power off does not eat the whole timeout.
(
    while sleep 5; do
        kill -0 $$ 2>/dev/null || exit 0
        if grep -q '@@@ IVBENCH-EMU END' "$LOG" 2>/dev/null; then
            sleep 20
            [ -s "$WORK/timeout.pid" ] && kill -INT "$(cat "$WORK/timeout.pid")" 2>/dev/null
            exit 0
        fi
    done
) &
WATCH=$!
TERM=vt100 script -q -e -c "sh -c 'echo \$\$ > $WORK/timeout.pid; exec timeout -k 10 $TMO bochs-bin -q -f $WORK/bochsrc -rc $WORK/debugger.rc'" \
    "$LOG.screen" < /dev/null > /dev/null 2>&1
RC=$?
E=$(date +%s)
kill "$WATCH" 2>/dev/null; wait "$WATCH" 2>/dev/null
# Bochs reports the guest's ACPI power-off as a panic ("ACPI control: soft power off"),
# and `panic: action=fatal` makes it exit 1: expected after a clean run.
emu_log "bochs exited rc=$RC after $((E - S))s"
if grep -q '@@@ IVBENCH-EMU END' "$LOG"; then exit 0; fi
[ "$RC" = 124 ] || [ "$RC" = 137 ] && exit 124
exit 1
