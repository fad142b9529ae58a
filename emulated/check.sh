#!/usr/bin/env bash
# usage: emulated/check.sh [amd|intel|all|amd-smp|intel-smp|smp]     (default: all)
#        emulated/check.sh --log HOST CONSOLE_LOG   (only re-check a saved console log)
#
# Runs ivbench's VM probes on kvm_amd (QEMU TCG playing an AMD host with SVM) and/or
# kvm_intel (Bochs playing an Intel host with VMX+EPT+VMFUNC), and checks the console:
#   - the vendor's KVM module (kvm_amd / kvm_intel) is loaded and /dev/kvm exists,
#   - ivbench env reports that backend; ivbench list shows every vm.* probe as supported
#     or unsupported with a reason, and vm.view.vmfunc's reason is this backend's,
#   - ivbench run exits 0 and every vm.* row (each parameter point) in `ivbench show` is
#     `ok` or `unsupported: <reason>`, never `failed`; the core probes (vm.native.loop,
#     vm.hypercall.null, vm.exit.pio, vm.exit.mmio, vm.exit.cpuid, vm.syscall.getppid)
#     are `ok`; the null hypercall used vmmcall/vmcall and got -1000 (-KVM_ENOSYS).
# all = amd + intel with one emulated CPU (the two-vCPU probes are then unsupported);
# smp = amd-smp + intel-smp, two emulated CPUs (see README.md: amd-smp counts native-guard
# refusals under plain TCG as skipped).
# Ends with one line per host, `emulated-amd: N passed, M failed`, and for all/smp a
# total `emulated: N passed, M failed`; exits 1 if any check failed.
#
# Functional only: timings inside an emulator mean nothing.
#
# Environment:
#   IVBENCH_EMU_CACHE        cache of packages, kernel, images (default /var/cache/ivbench-emulated)
#   IVBENCH_EMU_LOGS         where console logs go (default $IVBENCH_EMU_CACHE/logs)
#   IVBENCH_BINARY           a statically linked ivbench to use instead of building one
#   IVBENCH_EMU_AMD_TIMEOUT  seconds for the whole QEMU boot+run (default 900)
#   IVBENCH_EMU_INTEL_TIMEOUT seconds for the whole Bochs boot+run (default 2700)
#   IVBENCH_EMU_INTEL_PROBE_TIMEOUT  ivbench --timeout inside Bochs, guest seconds (15)
#   IVBENCH_EMU_AMD_ITERATIONS / IVBENCH_EMU_INTEL_ITERATIONS  samples per probe (50 / 20)
#   IVBENCH_EMU_ECHO=1       also stream QEMU's console to stdout while it runs
set -uo pipefail
. "$(dirname "$0")/lib.sh"

WHICH=${1:-all}
ONLY_LOG=
if [ "$WHICH" = --log ]; then
    [ $# -eq 3 ] || { sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
    WHICH=$2; ONLY_LOG=$3
fi
case "$WHICH" in amd|intel|all|amd-smp|intel-smp|smp) ;; *) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;; esac

LOGS=${IVBENCH_EMU_LOGS:-$EMU_CACHE/logs}
IMG="$EMU_CACHE/image"
mkdir -p "$LOGS" "$IMG"

# Probes whose row must be `ok` (anything else the run lists must be ok or unsupported).
CORE_PROBES="vm.native.loop vm.hypercall.null vm.exit.pio vm.exit.mmio vm.exit.cpuid vm.syscall.getppid"


# check_log HOST LOG MODULE : runs the checks, prints one line per check and
# the closing `emulated-HOST: N passed, M failed` line. Returns 1 if any check failed.
check_log() {
    local host=$1 log=$2 module=$3 pass=0 fail=0 skip=0
    ok()  { pass=$((pass + 1)); printf '  PASS %s\n' "$*"; }
    bad() { fail=$((fail + 1)); printf '  FAIL %s\n' "$*"; }
    skipped() { skip=$((skip + 1)); printf '  SKIP %s\n' "$*"; }
    # probe_bad LABEL STATUS MESSAGE: a failed probe row; with EMULATION_GUARD_IS_SKIP=1, a
    # row refused only by the native guard (emulator too slow) is a skip.
    local genuine_bad=0
    probe_bad() {
        genuine_bad=$((genuine_bad + 1))
        if [ "${EMULATION_GUARD_IS_SKIP:-0}" = 1 ] && case "$2" in *"guest is being emul"*) true ;; *) false ;; esac; then
            skipped "$1: refused by the native guard under plain TCG (emulator speed, not a probe error): $2"
            genuine_bad=$((genuine_bad - 1))
        else bad "$1: $3"; fi
    }
    echo "emulated-$host checks ($log):"

    if tr -d '\r' < "$log" | has '^@@@ IVBENCH-EMU BEGIN'; then ok "init started"; else bad "init never started (no '@@@ IVBENCH-EMU BEGIN'; see $log)"; fi
    if tr -d '\r' < "$log" | has '^@@@ IVBENCH-EMU END'; then ok "init finished"; else bad "init did not finish (no '@@@ IVBENCH-EMU END')"; fi

    local mods
    mods=$(section "$log" kvm-modules)
    if echo "$mods" | has -x "$module"; then ok "module $module loaded (/sys/module: $(echo "$mods" | tr '\n' ' '))"
    else bad "module $module not in /sys/module (saw: $(echo "$mods" | tr '\n' ' '); insmod: $(section "$log" modules | tr '\n' ';'))"; fi

    if section "$log" dev-kvm | has '/dev/kvm'; then ok "/dev/kvm exists"; else bad "/dev/kvm missing"; fi

    local be
    be=$(section "$log" env | awk '$1 == "backend" { print $2; exit }')
    if [ "$be" = "$module" ]; then ok "ivbench env: backend $be"; else bad "ivbench env: backend '${be:-?}', expected $module"; fi

    # ivbench list: the vm.* probes are listed, each `supported` or `unsupported: <reason>`;
    # none speaks of kvm_pvm; vm.view.vmfunc (unsupported on every stock KVM) gives the
    # reason of this backend.
    local list listed odd unsup vmfunc
    list=$(section "$log" list)
    listed=$(echo "$list" | awk '$1 ~ /^vm\./ { print $1 }' | sort -u)
    odd=$(echo "$list" | awk '$1 ~ /^vm\./ && !($3 == "supported" || $3 == "unsupported:") { print $1 }' | tr '\n' ' ')
    unsup=$(echo "$list" | awk '$1 ~ /^vm\./ && $3 == "unsupported:" { print $1 }' | tr '\n' ' ')
    vmfunc=$(echo "$list" | awk '$1 == "vm.view.vmfunc" { $1 = ""; $2 = ""; print; exit }' | sed 's/^ *//')
    if [ -z "$listed" ]; then bad "ivbench list: no vm.* probes (rc $(section_rc "$log" list))"
    elif [ -n "$odd" ]; then bad "ivbench list: neither supported nor unsupported: <reason>: $odd"
    else ok "ivbench list: $(echo "$listed" | wc -l) vm.* probes; unsupported: ${unsup:-none}"; fi
    if echo "$list" | has kvm_pvm; then bad "ivbench list mentions kvm_pvm: $(echo "$list" | grep kvm_pvm | head -n1)"; fi
    case "$module:$vmfunc" in
        kvm_amd:*kvm_amd*|kvm_intel:*VMFUNC*) ok "ivbench list: vm.view.vmfunc names the $module reason: $vmfunc" ;;
        *) bad "ivbench list: vm.view.vmfunc reason does not match $module: '${vmfunc:-no row}'" ;;
    esac


    # A run that never finished (hung probe, emulator killed): one failure naming the last
    # thing ivbench printed, instead of one per missing row.
    if ! tr -d '\r' < "$log" | has '^@@@ END run rc='; then
        local last
        last=$(section "$log" run | grep -v '^[│├└┌╞]' | tail -n 2 | tr '\n' ' ')
        bad "ivbench run never finished (a probe hung or the emulator was stopped); its last lines: ${last:-none}"
        echo "emulated-$host: $pass passed, $fail failed"
        TOTAL_PASS=$((TOTAL_PASS + pass)); TOTAL_FAIL=$((TOTAL_FAIL + fail))
        return 1
    fi

    # The `ivbench show` table: rows `│ probe │ params │ method │ status │ ...`.
    local rows
    rows=$(section "$log" show | sed 's/┆/│/g' | awk -F'│' 'NF > 5 { p = $2; q = $3; s = $5; gsub(/^ +| +$/, "", p); gsub(/^ +| +$/, "", q); gsub(/^ +| +$/, "", s); if (p ~ /^vm\./) print p "\t" s "\t" q }')
    if [ -z "$rows" ]; then
        bad "ivbench show printed no vm.* rows (rc $(section_rc "$log" show))"
    fi
    local p s seen
    for p in $CORE_PROBES; do
        s=$(echo "$rows" | awk -F'\t' -v p="$p" '$1 == p { print $2 }' | head -n1)
        if [ "$s" = ok ]; then ok "$p: ok"; else probe_bad "$p" "$s" "'${s:-no row}' (expected ok)"; fi
    done
    # Every other vm.* row: ok or unsupported with a reason.
    local q label
    while IFS=$'\t' read -r p s q; do
        [ -n "$p" ] || continue
        case " $CORE_PROBES " in *" $p "*) continue ;; esac
        label=$p; [ -n "$q" ] && label="$p [$q]"
        case "$s" in
            ok) ok "$label: ok" ;;
            "unsupported: "?*) ok "$label: $s" ;;
            *) probe_bad "$label" "$s" "'$s' (expected ok or unsupported: <reason>)" ;;
        esac
    done <<< "$rows"
    # ivbench run exits 1 when a point failed: a skip-class failure (above) excuses that.
    local rc
    rc=$(section_rc "$log" run)
    if [ "$rc" = 0 ]; then ok "ivbench run exited 0"
    elif [ "$rc" = 1 ] && [ "$skip" -gt 0 ] && [ "$genuine_bad" = 0 ]; then skipped "ivbench run exited 1 (only native-guard refusals)"
    else bad "ivbench run exited ${rc:-?(never finished)}"; fi
    # Any probe listed by `ivbench list` but missing from the run is a failure too.
    for p in $listed; do
        seen=$(echo "$rows" | awk -F'\t' -v p="$p" '$1 == p' | head -n1)
        [ -n "$seen" ] && continue
        case " ${EMU_EXCLUDED:-} " in
            *" $p "*) skipped "$p: not run here: ${EMU_EXCLUDED_WHY:-excluded}" ;;
            *) bad "$p: listed but has no row in ivbench show" ;;
        esac
    done

    # summary.csv notes: the backend every VM probe ran on and what the null hypercall
    # returned (KVM answers an unknown hypercall number with -KVM_ENOSYS = -1000).
    local csv hc want_hc backends
    csv=$(section "$log" summary-csv)
    case "$module" in kvm_amd) want_hc=vmmcall ;; *) want_hc=vmcall ;; esac
    hc=$(echo "$csv" | grep '^vm\.hypercall\.null,' | grep -o 'hypercall [a-z$0-9x ]* nr 0x[0-9a-f]* returned -\{0,1\}[0-9]* every time' | head -n1)
    if [ -n "$hc" ] && echo "$hc" | has "^hypercall $want_hc nr .* returned -1000 every time"; then ok "vm.hypercall.null: $hc (-KVM_ENOSYS)"
    else bad "vm.hypercall.null: expected '$want_hc ... returned -1000', notes say: '${hc:-nothing}'"; fi
    backends=$(echo "$csv" | grep '^vm\.' | grep -o 'backend kvm_[a-z]* (hypercall [^)]*)' | sort | uniq -c | sed 's/^ *//')
    if [ -z "$backends" ]; then bad "summary.csv: no VM probe notes naming a backend"
    elif echo "$backends" | grep -v -q "backend $module (hypercall $want_hc)"; then bad "summary.csv notes name other backends: $(echo "$backends" | tr '\n' ';')"
    else ok "summary.csv notes: $(echo "$backends" | tr '\n' ';')"; fi

    # Full statuses (the table truncates them) of every VM probe that is not ok.
    local full
    full=$(section "$log" run | grep -E '^  vm\.[^ ]+( [^ []+)? +\[[^]]*\]: ' | grep -v -E '\]: ok( |$)')
    if [ -n "$full" ]; then echo "  VM probe statuses other than ok, in full:"; echo "$full" | sed 's/^/    /'; fi

    if [ "$skip" -gt 0 ]; then echo "emulated-$host: $pass passed, $fail failed, $skip skipped"
    else echo "emulated-$host: $pass passed, $fail failed"; fi
    TOTAL_PASS=$((TOTAL_PASS + pass)); TOTAL_FAIL=$((TOTAL_FAIL + fail)); TOTAL_SKIP=$((TOTAL_SKIP + skip))
    [ "$fail" = 0 ]
}

TOTAL_PASS=0; TOTAL_FAIL=0; TOTAL_SKIP=0
SUMMARY=()

if [ -n "$ONLY_LOG" ]; then
    case "$WHICH" in
        amd) check_log amd "$ONLY_LOG" kvm_amd ;;
        amd-smp) EMULATION_GUARD_IS_SKIP=1 check_log amd-smp "$ONLY_LOG" kvm_amd ;;
        intel|intel-smp) check_log "$WHICH" "$ONLY_LOG" kvm_intel ;;
        *) exit 2 ;;
    esac
    exit $?
fi

T0=$(date +%s)
if [ -n "${IVBENCH_BINARY:-}" ]; then
    BIN=$IVBENCH_BINARY
    emu_check_static "$BIN"
else
    BIN=$(emu_static_ivbench) || exit 1
fi
emu_log "ivbench binary: $BIN ($(du -h "$BIN" | cut -f1))"
"$EMU_DIR/build-initramfs.sh" "$IMG" "$BIN" || emu_die "build-initramfs.sh failed"
emu_log "build done in $(( $(date +%s) - T0 ))s"


run_amd() {
    local log="$LOGS/amd-console.log" s=$(date +%s) rc
    "$EMU_DIR/run-qemu-amd.sh" "$IMG" "$log" "${IVBENCH_EMU_AMD_TIMEOUT:-900}" \
        "ivbench.iterations=${IVBENCH_EMU_AMD_ITERATIONS:-50} ivbench.timeout=60"
    rc=$?
    SUMMARY+=("emulated-amd: wall $(( $(date +%s) - s ))s (emulator exit $rc)")
    check_log amd "$log" kvm_amd
}
# Two emulated CPUs, so the two-vCPU probes (vm.irq.*, vm.ipi.*, vm.notify.*) run too.
# QEMU cannot boot two CPUs under -icount, so this runs plain multi-threaded TCG, where the
# guest TSC is the host's: the native guard (<= 10 cycles per dec;jnz) then measures the
# emulator's speed and may refuse a probe ("guest is being emulated"); such rows are
# counted as skipped, not passed. The guest clock runs at wall speed here.
run_amd_smp() {
    local log="$LOGS/amd-smp-console.log" s=$(date +%s) rc
    IVBENCH_EMU_QEMU_SMP=2 IVBENCH_EMU_QEMU_ICOUNT= \
    "$EMU_DIR/run-qemu-amd.sh" "$IMG" "$log" "${IVBENCH_EMU_AMD_TIMEOUT:-900}" \
        "ivbench.iterations=${IVBENCH_EMU_AMD_ITERATIONS:-50} ivbench.timeout=60"
    rc=$?
    SUMMARY+=("emulated-amd-smp: wall $(( $(date +%s) - s ))s (emulator exit $rc)")
    EMULATION_GUARD_IS_SKIP=1 check_log amd-smp "$log" kvm_amd
}
# Bochs' guest clock runs ~10-40x slower than the wall clock (boot to init: ~8 guest seconds,
# 100-300 wall seconds), so ivbench's per-point timeout is in guest seconds and kept small: a
# probe that hangs costs ~timeout x 10-40 wall seconds.
run_intel() {
    local tag=${1:-intel} smp=${2:-1} log s=$(date +%s) rc
    log="$LOGS/$tag-console.log"
    IVBENCH_EMU_BOCHS_SMP=$smp \
    "$EMU_DIR/run-bochs-intel.sh" "$IMG" "$log" "${IVBENCH_EMU_INTEL_TIMEOUT:-2700}" \
        "ivbench.iterations=${IVBENCH_EMU_INTEL_ITERATIONS:-20} ivbench.timeout=${IVBENCH_EMU_INTEL_PROBE_TIMEOUT:-15} ${3:-}"
    rc=$?
    SUMMARY+=("emulated-$tag: wall $(( $(date +%s) - s ))s (emulator exit $rc)")
    check_log "$tag" "$log" kvm_intel
}
# vm.notify.mwait is left out on 2-CPU Bochs: there it never returned (20 min, ivbench's
# watchdog did not end it either; the second emulated CPU stopped taking timer ticks),
# which points at Bochs' MWAIT in VMX non-root mode. IVBENCH_EMU_INTEL_SMP_PROBES overrides.
INTEL_SMP_PROBES_DEFAULT='vm.native.*,vm.hypercall.*,vm.exit.*,vm.syscall.*,vm.view.*,vm.irq.*,vm.ipi.*,vm.notify.poll,vm.notify.poll-intervm,vm.notify.halt'
run_intel_smp() {
    local probes=${IVBENCH_EMU_INTEL_SMP_PROBES:-$INTEL_SMP_PROBES_DEFAULT}
    if [ "$probes" = "$INTEL_SMP_PROBES_DEFAULT" ]; then
        EMU_EXCLUDED="vm.notify.mwait" EMU_EXCLUDED_WHY="hangs 2-CPU Bochs 2.7 (see check.sh)" run_intel intel-smp 2 "ivbench.probes=$probes"
    else
        run_intel intel-smp 2 "ivbench.probes=$probes"
    fi
}

RESULT=0
case "$WHICH" in
    amd) run_amd || RESULT=1 ;;
    intel) run_intel || RESULT=1 ;;
    all) run_amd || RESULT=1; run_intel || RESULT=1 ;;
    amd-smp) run_amd_smp || RESULT=1 ;;
    intel-smp) run_intel_smp || RESULT=1 ;;
    smp) run_amd_smp || RESULT=1; run_intel_smp || RESULT=1 ;;
esac
for l in "${SUMMARY[@]}"; do emu_log "$l"; done
emu_log "total wall $(( $(date +%s) - T0 ))s; console logs in $LOGS"
case "$WHICH" in all|smp) echo "emulated: $TOTAL_PASS passed, $TOTAL_FAIL failed$( [ "$TOTAL_SKIP" -gt 0 ] && echo ", $TOTAL_SKIP skipped")" ;; esac
exit $RESULT
