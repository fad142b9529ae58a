#!/usr/bin/env bash
# usage: emulated/build-initramfs.sh OUTDIR IVBENCH_BINARY
#
# Writes into OUTDIR:
#   vmlinuz            the pinned Debian kernel (kvm-patch/pinned-kernel, see IVBENCH_EMU_KVER)
#   initramfs.cpio.gz  busybox-static, the KVM modules for both vendors with their
#                      dependencies, the given statically linked ivbench (stripped) and
#                      emulated/init
#   kernel-release     the kernel release used
#
# Downloads (apt-get download, no install) are cached in $IVBENCH_EMU_CACHE
# (default /var/cache/ivbench-emulated): a rerun only repacks the initramfs.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -eq 2 ] || { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
OUT=$1; BIN=$2

emu_need_cmds cpio:cpio gzip:gzip modinfo:kmod file:file dpkg:dpkg apt-get:apt
emu_check_static "$BIN"

KVER=$(emu_kernel_release)
KTREE=$(emu_kernel_tree "$KVER")
MODDIR="$KTREE/lib/modules/$KVER"

BB_DEB=$(emu_download_deb busybox-static)
BB_TREE="$EMU_CACHE/busybox-static"
if [ ! -x "$BB_TREE/bin/busybox" ] || [ "$BB_DEB" -nt "$BB_TREE/bin/busybox" ]; then
    rm -rf "$BB_TREE"; mkdir -p "$BB_TREE"
    dpkg -x "$BB_DEB" "$BB_TREE"
fi
BUSYBOX="$BB_TREE/bin/busybox"
[ -x "$BUSYBOX" ] || emu_die "no bin/busybox in $BB_DEB"

# find_module NAME : path of NAME.ko (kvm_amd and kvm-amd are the same module) in MODDIR.
find_module() {
    local n=${1//_/-} f
    f=$(find "$MODDIR/kernel" \( -name "$n.ko*" -o -name "${n//-/_}.ko*" \) | head -n1)
    [ -n "$f" ] || emu_die "module $1 not found under $MODDIR/kernel"
    echo "$f"
}

# deps_first NAME : prints NAME's module file and those of its dependencies (modinfo
# depends, recursively), dependencies first, each once.
declare -A SEEN=()
ORDER=()
deps_first() {
    local f d
    f=$(find_module "$1")
    [ -n "${SEEN[$f]:-}" ] && return 0
    SEEN[$f]=1
    for d in $(modinfo -F depends "$f" | tr ',' ' '); do deps_first "$d"; done
    ORDER+=("$f")
}

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE"/{bin,sbin,etc,proc,sys,dev,tmp,lib/modules}

# Copies a module (decompressing .ko.xz / .ko.zst if this kernel ships them) into the
# initramfs and prints its path there.
install_module() {
    local f=$1 b
    b=$(basename "$f"); b=${b%.xz}; b=${b%.zst}
    case "$f" in
        *.xz) xz -dc "$f" > "$STAGE/lib/modules/$b" ;;
        *.zst) zstd -qdc "$f" > "$STAGE/lib/modules/$b" ;;
        *) cp "$f" "$STAGE/lib/modules/$b" ;;
    esac
    echo "/lib/modules/$b"
}

for top in kvm_amd kvm_intel; do
    SEEN=(); ORDER=()
    deps_first "$top"
    : > "$STAGE/etc/modules.$top"
    for f in "${ORDER[@]}"; do install_module "$f" >> "$STAGE/etc/modules.$top"; done
    emu_log "$top load order: $(xargs -n1 basename < "$STAGE/etc/modules.$top" | tr '\n' ' ')"
done
install_module "$(find_module msr)" > /dev/null

cp "$BUSYBOX" "$STAGE/bin/busybox"
cp "$BIN" "$STAGE/bin/ivbench"
# The release build carries debug info (~27 MB); stripped it is ~4 MB, which Bochs unpacks
# minutes faster. Panics still print their message.
if command -v strip >/dev/null; then strip "$STAGE/bin/ivbench"; fi
cp "$EMU_DIR/init" "$STAGE/init"
chmod 0755 "$STAGE/init" "$STAGE/bin/busybox" "$STAGE/bin/ivbench"

mkdir -p "$OUT"
cp "$KTREE/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
(cd "$STAGE" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -6 > "$OUT/initramfs.cpio.gz.tmp"
mv "$OUT/initramfs.cpio.gz.tmp" "$OUT/initramfs.cpio.gz"
echo "$KVER" > "$OUT/kernel-release"
emu_log "wrote $OUT/vmlinuz ($KVER) and $OUT/initramfs.cpio.gz ($(du -h "$OUT/initramfs.cpio.gz" | cut -f1))"
