#!/usr/bin/env bash
# usage: emulated/check-kvm-patch.sh BUILD_DIR
#        emulated/check-kvm-patch.sh --log CONSOLE_LOG   (only re-check a saved console)
#
# Runs the kvm-patch for real on an emulated Intel host: Bochs (corei7_skylake_x:
# VMX, EPT, VPID, unrestricted guest, VMFUNC with EPTP switching) boots Debian's
# 6.12.117+deb12-amd64 kernel (the one the series is built against), which loads
# its own kvm.ko and
#   1. its stock kvm-intel.ko: the stock KVM selftest userspace_io_test must pass
#      (kvm_intel 6.12 works on this emulated CPU) and vmfunc_views_test must
#      skip (stock KVM has no views API);
#      and ivbench must report vm.view.vmfunc `unsupported:` with the stock
#      module's reason;
#   2. the patched kvm-intel.ko: the parameter vmfunc_views must read Y, every
#      vmfunc_views_test case must pass, userspace_io_test must still pass,
#      `ivbench run vm.view.vmfunc vm.view.hypercall` must give `ok` rows (the
#      guest finds the view by CPUID + hypercall, switches with VMFUNC, reads the
#      protected page only inside it, no #UD, no fault), and the kernel log must
#      show no WARNING/BUG/Oops.
# BUILD_DIR is what kvm-patch/check leaves (kvm-intel.ko, vmfunc_views_test,
# userspace_io_test); the static ivbench is IVBENCH_BINARY or built as in
# emulated/check.sh. Prints one line per check and `emulated-kvm-patch: N passed,
# M failed`; exits 1 if any check failed.
#
# Functional only: timings inside Bochs mean nothing.
#
# Environment: IVBENCH_EMU_CACHE (default /var/cache/ivbench-emulated),
# IVBENCH_EMU_KVM_PATCH_TIMEOUT (whole boot, default 2400 s),
# IVBENCH_EMU_KVM_PATCH_CASES (comma-separated vmfunc_views_test cases to run
# instead of all; for debugging, the checks then expect only those), and those of
# run-bochs-intel.sh (IVBENCH_EMU_BOCHS_CPU, IVBENCH_EMU_BOCHS_IPS,
# IVBENCH_EMU_BOCHS_SMP: emulated CPUs, default 2 here; with 1 the path.a check is a SKIP).
set -uo pipefail
. "$(dirname "$0")/lib.sh"

KVER=$KVM_PATCH_KVER
LOGS=${IVBENCH_EMU_LOGS:-$EMU_CACHE/logs}
LOG="$LOGS/kvm-patch-console.log"

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
ONLY_LOG=
if [ "$1" = --log ]; then [ $# -eq 2 ] || usage; ONLY_LOG=$2; LOG=$2; else [ $# -eq 1 ] || usage; BUILD=$1; fi


build_image() {
    local img=$1 ktree stage m
    emu_need_cmds cpio:cpio gzip:gzip xz:xz-utils file:file dpkg:dpkg
    for f in kvm-intel.ko vmfunc_views_test userspace_io_test; do
        [ -f "$BUILD/$f" ] || emu_die "$BUILD/$f missing (run kvm-patch/check first)"
    done
    emu_check_static "$BUILD/vmfunc_views_test"
    emu_check_static "$BUILD/userspace_io_test"
    local bin
    if [ -n "${IVBENCH_BINARY:-}" ]; then bin=$IVBENCH_BINARY; emu_check_static "$bin"
    else bin=$(emu_static_ivbench) || emu_die "no static ivbench"; fi
    ktree=$(emu_kernel_tree "$KVER")
    stage=$(mktemp -d)
    mkdir -p "$stage"/{bin,proc,sys,dev,tmp,lib/modules}
    for m in virt/lib/irqbypass arch/x86/kvm/kvm arch/x86/kvm/kvm-intel; do
        xz -dc "$ktree/lib/modules/$KVER/kernel/$m.ko.xz" > "$stage/lib/modules/$(basename "$m").ko" \
            || emu_die "no $m.ko.xz in linux-image-$KVER"
    done
    mv "$stage/lib/modules/kvm-intel.ko" "$stage/lib/modules/kvm-intel-stock.ko"
    # msr: ivbench's Intel backend names the VMX capability MSRs in its reasons.
    xz -dc "$ktree/lib/modules/$KVER/kernel/arch/x86/kernel/msr.ko.xz" > "$stage/lib/modules/msr.ko" \
        || emu_die "no msr.ko.xz in linux-image-$KVER"
    cp "$BUILD/kvm-intel.ko" "$stage/lib/modules/kvm-intel.ko"
    # Debug info is ~9 MB of the module; Bochs unpacks the initramfs slowly.
    strip --strip-debug "$stage/lib/modules/kvm-intel.ko"
    local bb_deb bb_tree="$EMU_CACHE/busybox-static"
    bb_deb=$(emu_download_deb busybox-static)
    if [ ! -x "$bb_tree/bin/busybox" ]; then rm -rf "$bb_tree"; mkdir -p "$bb_tree"; dpkg -x "$bb_deb" "$bb_tree"; fi
    cp "$bb_tree/bin/busybox" "$stage/bin/busybox"
    cp "$BUILD/vmfunc_views_test" "$BUILD/userspace_io_test" "$stage/bin/"
    cp "$bin" "$stage/bin/ivbench"
    strip "$stage/bin/vmfunc_views_test" "$stage/bin/userspace_io_test" "$stage/bin/ivbench" 2>/dev/null || true
    cp "$EMU_DIR/kvm-patch-init" "$stage/init"
    chmod 0755 "$stage/init" "$stage/bin/"*
    mkdir -p "$img"
    cp "$ktree/boot/vmlinuz-$KVER" "$img/vmlinuz"
    (cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -6 > "$img/initramfs.cpio.gz"
    rm -rf "$stage"
}

if [ -z "$ONLY_LOG" ]; then
    IMG="$EMU_CACHE/image-kvm-patch"
    # Two emulated CPUs: path.a transport=vmfunc pins VM1 and VM2 to one each, and the
    # selftest's destroy-while-inside case then races a real second CPU.
    export IVBENCH_EMU_BOCHS_SMP=${IVBENCH_EMU_BOCHS_SMP:-2}
    build_image "$IMG"
    mkdir -p "$LOGS"
    "$EMU_DIR/run-bochs-intel.sh" "$IMG" "$LOG" "${IVBENCH_EMU_KVM_PATCH_TIMEOUT:-2400}" \
        "${IVBENCH_EMU_KVM_PATCH_CASES:+kvmpatch.cases=$IVBENCH_EMU_KVM_PATCH_CASES}"
    emu_log "run-bochs-intel.sh rc=$?"
fi

pass=0; fail=0
ok()  { pass=$((pass + 1)); printf '  PASS %s\n' "$*"; }
bad() { fail=$((fail + 1)); printf '  FAIL %s\n' "$*"; }
echo "emulated-kvm-patch checks ($LOG):"
if grep -q '@@@ IVBENCH-EMU END' "$LOG" 2>/dev/null; then ok "guest ran to the end"; else bad "guest did not reach the end marker"; fi
grep -q "^kernel: $KVER" <(tr -d '\r' < "$LOG") && ok "kernel $KVER" || bad "kernel is not $KVER"
[ "$(section_rc "$LOG" stock-insmod)" = 0 ] && ok "stock kvm-intel.ko loads" || bad "stock kvm-intel.ko does not load"
[ "$(section_rc "$LOG" stock-selftest)" = 0 ] && ok "stock module: userspace_io_test passes" \
    || bad "stock module: userspace_io_test rc=$(section_rc "$LOG" stock-selftest)"
[ "$(section_rc "$LOG" stock-views-test)" = 4 ] && section "$LOG" stock-views-test | has 'SKIP.*no VMFUNC views API' \
    && ok "stock module: vmfunc_views_test skips (no views API)" \
    || bad "stock module: vmfunc_views_test did not skip: rc=$(section_rc "$LOG" stock-views-test)"
# ivbench with the stock module: vm.view.vmfunc is unsupported, for the stock module's reason.
row=$(section "$LOG" stock-ivbench-list | awk '$1 == "vm.view.vmfunc"')
case "$row" in
    *"unsupported:"*"stock module"*) ok "stock module: ivbench lists vm.view.vmfunc as unsupported: stock module" ;;
    *) bad "stock module: ivbench list says '${row:-no row}' for vm.view.vmfunc" ;;
esac
[ "$(section_rc "$LOG" patched-insmod)" = 0 ] && ok "patched kvm-intel.ko loads" || bad "patched kvm-intel.ko does not load"
[ "$(section "$LOG" patched-param | tr -d ' ')" = Y ] && ok "patched module: vmfunc_views=Y" \
    || bad "patched module: vmfunc_views is '$(section "$LOG" patched-param)'"
cases=$(section "$LOG" patched-views-test | grep -E '^(not )?ok [0-9]+ ')
if [ -z "$cases" ]; then
    bad "patched module: vmfunc_views_test reported no cases"
else
    while IFS= read -r l; do
        name=${l#*ok }; name=${name#* }
        case "$l" in
            "not ok"*) bad "vmfunc_views_test: $name" ;;
            *"# SKIP"*) bad "vmfunc_views_test: $name skipped" ;;
            *) ok "vmfunc_views_test: $name" ;;
        esac
    done <<< "$cases"
fi
[ "$(section_rc "$LOG" patched-views-test)" = 0 ] && ok "patched module: vmfunc_views_test exits 0" \
    || bad "patched module: vmfunc_views_test rc=$(section_rc "$LOG" patched-views-test)"
[ "$(section_rc "$LOG" patched-selftest)" = 0 ] && ok "patched module: userspace_io_test passes" \
    || bad "patched module: userspace_io_test rc=$(section_rc "$LOG" patched-selftest)"
# ivbench on the patched module: both view probes run and pass their own validation.
[ "$(section_rc "$LOG" patched-ivbench-run)" = 0 ] && ok "patched module: ivbench run exits 0" \
    || bad "patched module: ivbench run rc=$(section_rc "$LOG" patched-ivbench-run): $(section "$LOG" patched-ivbench-run | grep -iE 'error|failed|unsupported' | head -n2 | tr '\n' ' ')"
rows=$(section "$LOG" patched-ivbench-show | sed 's/┆/│/g' | awk -F'│' 'NF > 5 { p = $2; m = $4; s = $5; gsub(/^ +| +$/, "", p); gsub(/^ +| +$/, "", m); gsub(/^ +| +$/, "", s); if (p ~ /^vm\./) print p "\t" m "\t" s }')
for p in vm.view.vmfunc vm.view.hypercall; do
    st=$(echo "$rows" | awk -F'\t' -v p="$p" '$1 == p { print $3 }' | sort -u | paste -sd, -)
    [ "$st" = ok ] && ok "patched module: ivbench $p: ok ($(echo "$rows" | awk -F'\t' -v p="$p" '$1 == p { print $2 }' | paste -sd, -))" \
        || bad "patched module: ivbench $p: '${st:-no row}'"
done
# 20 samples of one round trip each: 40 VMFUNCs, every timed load inside the view.
notes=$(section "$LOG" patched-summary-csv | grep '^vm\.view\.vmfunc,' | head -n1)
switches=$(echo "$notes" | grep -o 'view_switches=[0-9]*' | cut -d= -f2)
outside=$(echo "$notes" | grep -o 'loads_outside_view=[0-9]*' | cut -d= -f2)
if [ "$switches" = 40 ] && [ "$outside" = 0 ] && echo "$notes" | has 'never saw the secret'; then
    ok "patched module: vm.view.vmfunc: 40 VMFUNCs, every timed load inside the view, the default view never saw the secret"
else bad "patched module: vm.view.vmfunc: view_switches '${switches:-?}' (want 40), loads_outside_view '${outside:-?}' (want 0)"; fi
brow=$(section "$LOG" patched-ivbench-batched-show | sed 's/┆/│/g' | awk -F'│' 'NF > 5 { p = $2; m = $4; s = $5; gsub(/^ +| +$/, "", p); gsub(/^ +| +$/, "", m); gsub(/^ +| +$/, "", s); if (p == "vm.view.vmfunc") print m " " s }')
[ "$brow" = "batched/8 ok" ] && ok "patched module: ivbench vm.view.vmfunc batched: ok" \
    || bad "patched module: ivbench vm.view.vmfunc batched: '${brow:-no row}' (rc $(section_rc "$LOG" patched-ivbench-batched))"
# Path A over the view (two emulated CPUs only): VM1 has no memslot for the ring, so every
# frame the sink verified went through VM1's view; the row balances exactly.
cpus=$(tr -d '\r' < "$LOG" | sed -n 's/^cpus: \([0-9]*\)$/\1/p' | head -n1)
if [ -z "$ONLY_LOG" ] && [ "${IVBENCH_EMU_BOCHS_SMP:-2}" -ge 2 ] && [ "${cpus:-0}" -lt 2 ]; then
    bad "Bochs was given ${IVBENCH_EMU_BOCHS_SMP:-2} CPUs but the guest saw ${cpus:-?}: path.a transport=vmfunc could not run"
elif grep -q '^@@@ BEGIN patched-path-vmfunc$' <(tr -d '\r' < "$LOG"); then
    prow=$(section "$LOG" patched-path-vmfunc-show | sed 's/┆/│/g' | awk -F'│' 'NF > 5 { p = $2; s = $5; gsub(/^ +| +$/, "", p); gsub(/^ +| +$/, "", s); if (p == "path.a") print s }')
    [ "$prow" = ok ] && ok "patched module: ivbench path.a transport=vmfunc: ok" \
        || bad "patched module: ivbench path.a transport=vmfunc: '${prow:-no row}': $(section "$LOG" patched-path-vmfunc | grep -iE 'error|invalid|failed' | head -n2 | tr '\n' ' ')"
    pcsv=$(section "$LOG" patched-path-vmfunc-csv | grep '^path\.a,' | head -n1)
    entries=$(echo "$pcsv" | grep -o 'view_entries=[0-9]*' | cut -d= -f2)
    if [ "${entries:-0}" -gt 0 ] && echo "$pcsv" | has 'transport=vmfunc: VM1 has no memslot for it'; then
        ok "patched module: path.a: VM1, with no memslot for the ring, entered its view $entries times"
    else bad "patched module: path.a: view_entries '${entries:-?}' (want > 0): '${pcsv:0:200}'"; fi
    hrow=$(section "$LOG" patched-path-hybrid-show | sed 's/┆/│/g' | awk -F'│' 'NF > 5 { p = $2; s = $5; gsub(/^ +| +$/, "", p); gsub(/^ +| +$/, "", s); if (p == "path.a") print s }')
    hcsv=$(section "$LOG" patched-path-hybrid-csv | grep '^path\.a,' | head -n1)
    kicks=$(echo "$hcsv" | grep -o 'kicks_tx=[0-9.]*' | head -n1 | cut -d= -f2)
    if [ "$hrow" = ok ] && [ "${kicks%.*}" -gt 0 ] 2>/dev/null; then
        ok "patched module: path.a transport=vmfunc notify=hybrid: ok, $kicks kicks sent from inside the view woke the sink"
    else
        bad "patched module: path.a transport=vmfunc notify=hybrid: '${hrow:-no row}', kicks '${kicks:-?}': $(section "$LOG" patched-path-hybrid | grep -iE 'error|invalid|failed' | head -n2 | tr '\n' ' ')"
    fi
else
    echo "  SKIP path.a transport=vmfunc: needs 2 emulated CPUs (IVBENCH_EMU_BOCHS_SMP=2)"
fi
# nmi_in_view's sysrq l makes every CPU print an NMI backtrace (a stack dump that ends
# with </TASK>): asked for, so left out; anything else with a trace is a failure.
if section "$LOG" dmesg | awk '/NMI backtrace for cpu [0-9]+$/ { skip = 1 } !skip { print } /<\/TASK>/ { skip = 0 }' \
        | has -E 'WARNING:|BUG:|Oops|Call Trace'; then
    bad "kernel log shows a WARNING/BUG/Oops (see $LOG)"
else ok "kernel log: no WARNING/BUG/Oops"; fi
echo "emulated-kvm-patch: $pass passed, $fail failed"
[ "$fail" = 0 ]
