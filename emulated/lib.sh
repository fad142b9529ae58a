# shellcheck shell=bash
# Helpers shared by the emulated-host scripts (sourced, not run).
#
# Environment:
#   IVBENCH_EMU_CACHE   where downloaded packages, the extracted kernel, the static ivbench
#                       build and the boot images live (default /var/cache/ivbench-emulated).
#                       Nothing downloaded or built here ever goes into the repository.
#   IVBENCH_EMU_KVER    a Debian kernel release to use instead of the pinned one,
#                       $KVM_PATCH_KVER from kvm-patch/pinned-kernel (6.12.117+deb12-amd64):
#                       the kernel the kvm-patch series is built against, so one kernel
#                       serves every emulated check.

EMU_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$EMU_DIR/.." && pwd)
# KVM_PATCH_KVER: the Debian kernel the kvm-patch series is pinned to.
. "$REPO_DIR/kvm-patch/pinned-kernel"
EMU_CACHE=${IVBENCH_EMU_CACHE:-/var/cache/ivbench-emulated}

emu_log() { printf '[emulated %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
# `... | has PATTERN`: grep that reads all of its input. `grep -q` stops at the first match,
# and under `set -o pipefail` the writer's SIGPIPE then fails the whole pipeline: a match
# reported as a miss, depending on timing.
has() { grep "$@" >/dev/null; }
emu_die() { emu_log "ERROR: $*"; exit 1; }

# apt-get update at most once an hour (a stamp in the cache; the helpers that need it
# also run in command substitutions, where a shell variable would not stick).
emu_apt_update() {
    local stamp="$EMU_CACHE/apt-update.stamp"
    mkdir -p "$EMU_CACHE"
    if [ -z "$(find "$stamp" -mmin -60 2>/dev/null)" ]; then
        emu_log "apt-get update"
        apt-get update -qq >&2 || emu_die "apt-get update failed"
        touch "$stamp"
    fi
}

# emu_need_cmds "cmd:package" ... : installs the Debian packages whose commands are missing.
emu_need_cmds() {
    local missing=() spec cmd pkg
    for spec in "$@"; do
        cmd=${spec%%:*}; pkg=${spec#*:}
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    # shellcheck disable=SC2207
    missing=($(printf '%s\n' "${missing[@]}" | sort -u))
    [ "$(id -u)" = 0 ] || emu_die "missing packages ${missing[*]} (run as root to install them)"
    emu_apt_update
    emu_log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
        || emu_die "apt-get install ${missing[*]} failed"
}

# emu_need_files "path:package" ... : same for files that are not commands (BIOS images).
emu_need_files() {
    local missing=() spec f pkg
    for spec in "$@"; do
        f=${spec%%:*}; pkg=${spec#*:}
        [ -e "$f" ] || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    emu_apt_update
    emu_log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
        || emu_die "apt-get install ${missing[*]} failed"
}

# emu_download_deb PACKAGE : prints the path of PACKAGE's .deb in the cache, downloading it
# (apt-get download, no install) when it is not there yet.
emu_download_deb() {
    local pkg=$1 d="$EMU_CACHE/debs" f
    mkdir -p "$d"
    f=$(ls "$d/${pkg}_"*.deb 2>/dev/null | sort -V | tail -n1)
    if [ -z "$f" ]; then
        emu_apt_update
        emu_log "apt-get download $pkg"
        # _apt cannot write into a root-owned cache: download as root without the sandbox.
        (cd "$d" && apt-get download -o APT::Sandbox::User=root "$pkg" >&2) || emu_die "apt-get download $pkg failed"
        f=$(ls "$d/${pkg}_"*.deb 2>/dev/null | sort -V | tail -n1)
    fi
    [ -n "$f" ] || emu_die "no .deb for $pkg in $d"
    echo "$f"
}

# emu_kernel_release : prints the Debian kernel release to use (see IVBENCH_EMU_KVER).
emu_kernel_release() {
    echo "${IVBENCH_EMU_KVER:-$KVM_PATCH_KVER}"
}

# emu_kernel_tree KVER : prints a directory holding the extracted package (boot/vmlinuz-KVER,
# lib/modules/KVER/...), extracting it into the cache on first use.
emu_kernel_tree() {
    local kver=$1 dest="$EMU_CACHE/kernel/$1"
    if [ ! -e "$dest/.complete" ]; then
        local deb
        deb=$(emu_download_deb "linux-image-$kver")
        emu_log "extracting $(basename "$deb")"
        rm -rf "$dest"; mkdir -p "$dest"
        dpkg -x "$deb" "$dest" || emu_die "dpkg -x $deb failed"
        [ -f "$dest/boot/vmlinuz-$kver" ] || emu_die "$deb has no boot/vmlinuz-$kver"
        touch "$dest/.complete"
    fi
    echo "$dest"
}

# emu_static_ivbench : builds ivbench statically linked (separate target dir, so the
# workspace's own target/ is untouched) and prints the binary's path.
# IVBENCH_STATIC_TARGET_DIR overrides the target dir (default /work/target-static when
# /work exists, else $EMU_CACHE/target-static).
emu_static_ivbench() {
    local tdir=${IVBENCH_STATIC_TARGET_DIR:-}
    if [ -z "$tdir" ]; then
        if [ -d /work ]; then tdir=/work/target-static; else tdir="$EMU_CACHE/target-static"; fi
    fi
    emu_need_cmds file:file
    emu_log "cargo build --release -p ivbench (static, target dir $tdir)"
    (cd "$REPO_DIR" && RUSTFLAGS='-C target-feature=+crt-static' \
        cargo build --release -p ivbench --target x86_64-unknown-linux-gnu --target-dir "$tdir" >&2) \
        || emu_die "static build of ivbench failed"
    local bin="$tdir/x86_64-unknown-linux-gnu/release/ivbench"
    emu_check_static "$bin"
    echo "$bin"
}

# emu_check_static BINARY : dies unless BINARY is a statically linked executable.
emu_check_static() {
    local bin=$1 desc
    [ -x "$bin" ] || emu_die "$bin: not an executable"
    desc=$(file -L "$bin")
    case "$desc" in
        *"statically linked"*|*"static-pie linked"*) ;;
        *) emu_die "$bin is not statically linked: $desc" ;;
    esac
    local l
    l=$(ldd "$bin" 2>&1 || true)
    case "$l" in
        *"not a dynamic executable"*|*"statically linked"*) ;;
        *) emu_die "$bin: ldd lists shared libraries: $(echo "$l" | tr '\n' ' ')" ;;
    esac
}

# Console logs of the emulated hosts: each program's output sits between
# `@@@ BEGIN NAME` and `@@@ END NAME rc=CODE` (written by init / kvm-patch-init).
# section LOG NAME : prints the lines between `@@@ BEGIN NAME` and `@@@ END NAME rc=..`.
section() {
    awk -v n="$2" '
        { sub(/\r$/, "") }
        $0 == "@@@ BEGIN " n { on = 1; next }
        index($0, "@@@ END " n " rc=") == 1 { on = 0 }
        on' "$1"
}
# section_rc LOG NAME : the exit code printed on the section's END line (empty if none).
section_rc() {
    tr -d '\r' < "$1" | sed -n "s/^@@@ END $2 rc=\([0-9]*\).*/\1/p" | tail -n1
}
