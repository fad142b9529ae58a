"""Checks the notebook loader against a real ivbench run.

The run is ``$IVBENCH_RUN`` (a run directory), else the newest under
``$IVBENCH_RUNS_ROOT`` or ``results/runs``. With no run at all the data tests are skipped
(``run_tests.sh`` always makes one first). The unit tests at the bottom need no run.
"""

from __future__ import annotations


import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hdrh.histogram import HdrHistogram

import ivbench_results as ir

# HdrHistogram with 3 significant digits: a reported value is within 1 part in 1000 of
# every value in its bucket; the brief allows +-0.5%, and we also allow one histogram unit
# (1/100 cycle) for values of a few cycles.
REL_TOL = 0.005
ABS_TOL_CYCLES = 0.01


def _run_path():
    env = os.environ.get("IVBENCH_RUN")
    if env:
        p = Path(env)
        assert (p / "manifest.json").is_file(), f"IVBENCH_RUN={env} is not a run directory"
        return p
    runs = ir.list_runs(ir.default_runs_root())
    return runs[-1] if runs else None


RUN = _run_path()
needs_run = pytest.mark.skipif(RUN is None, reason="no ivbench run found (set IVBENCH_RUN)")


@pytest.fixture(scope="module")
def loaded():
    manifest, df = ir.load_run(RUN)
    return manifest, df


@pytest.fixture(scope="module")
def hists():
    return ir.histograms(RUN)


def _close(a, b, rel=REL_TOL, abs_=0.0):
    return abs(a - b) <= max(rel * max(abs(a), abs(b)), abs_)


@needs_run
def test_manifest_has_the_contract_fields(loaded):
    manifest, df = loaded
    for k in ("run_id", "status", "started_utc", "command_line", "config", "hist_units_per_cycle", "fingerprint", "probes"):
        assert k in manifest, f"manifest lacks {k}"
    assert manifest["status"] in ("complete", "partial")
    assert manifest["hist_units_per_cycle"] == 100
    assert df.attrs["run_status"] == manifest["status"]
    ess = ir.fingerprint_essentials(manifest)
    assert ess["run_id"] == manifest["run_id"]
    assert ess["TSC kHz"] == manifest["fingerprint"]["tsc"]["khz"]


@needs_run
def test_every_row_has_a_known_status(loaded):
    _, df = loaded
    assert len(df) > 0
    assert set(df["status_kind"]) <= set(ir.STATUS_KINDS), df[~df["status_kind"].isin(ir.STATUS_KINDS)]["status"].tolist()
    assert (df["status_kind"] == "ok").any(), "a quick sweep has at least the host probes ok"


@needs_run
def test_unsupported_and_failed_rows_carry_reasons_and_no_numbers(loaded):
    _, df = loaded
    bad = df[df["status_kind"] != "ok"]
    for r in bad.itertuples():
        assert r.status_reason.strip(), f"{r.key}: status {r.status!r} has no reason"
        assert r.status == f"{r.status_kind}: {r.status_reason}"
        for c in ("p50_ns", "p99_ns", "p50_cycles", "p99_cycles"):
            assert math.isnan(getattr(r, c)), f"{r.key}: non-ok row has a number in {c}"
    # And they are listed, not dropped.
    listed = ir.not_ok_rows(df)
    assert len(listed) == len(bad)
    cores = ir.cores_needed(df)
    assert len(cores) == len(df)
    assert cores.loc[df["status_kind"] != "ok", "cores @10GbE (p50/67.2)"].isna().all()


@needs_run
def test_every_ok_row_has_a_histogram(loaded, hists):
    _, df = loaded
    ok = ir.ok_rows(df)
    # An ok row without latency samples is a throughput row: it must carry its rate.
    for r in ok[ok["count"] == 0].itertuples():
        assert not math.isnan(r.mpps) and r.sent == r.received + r.dropped, f"{r.key}: ok without samples or rate"
    for r in ir.latency_rows(df).itertuples():
        assert r.hlog_tag, f"{r.key}: ok row without hlog_tag"
        assert (RUN / "hlog" / f"{r.probe}.hlog").is_file(), f"{r.key}: no hlog file"
        h = hists.get((r.probe, r.hlog_tag))
        assert h is not None, f"{r.key}: tag {r.hlog_tag} not in hlog/{r.probe}.hlog"
        assert h.get_total_count() == int(r.count), f"{r.key}: hlog count {h.get_total_count()} != csv {r.count}"


@needs_run
def test_hlog_percentiles_match_the_csv(loaded, hists):
    manifest, df = loaded
    upc = manifest["hist_units_per_cycle"]
    checked = 0
    for r in ir.latency_rows(df).itertuples():
        h = hists[(r.probe, r.hlog_tag)]
        st = ir.hist_stats(h, r.tsc_khz, upc)
        for p in ("p50", "p90", "p99", "p999"):
            ours, csv = st[f"{p}_cycles"], getattr(r, f"{p}_cycles")
            assert _close(ours, csv, abs_=ABS_TOL_CYCLES), f"{r.key}: {p} cycles from hlog {ours} vs csv {csv}"
            ours_ns, csv_ns = st[f"{p}_ns"], getattr(r, f"{p}_ns")
            assert _close(ours_ns, csv_ns, abs_=ABS_TOL_CYCLES * 1e6 / r.tsc_khz), f"{r.key}: {p} ns from hlog {ours_ns} vs csv {csv_ns}"
        # hdrh's own percentile routine (rounds the target count differently) agrees too.
        for p in (50.0, 99.0):
            theirs = h.get_value_at_percentile(p) / upc
            csv = getattr(r, f"p{int(p)}_cycles")
            # Neighbouring samples may lie a few buckets apart (a packet path's latency
            # spreads), so the two rounding rules can differ by about a percent there.
            assert _close(theirs, csv, abs_=ABS_TOL_CYCLES) or _tail_is_sparse(h, p) or _close(theirs, csv, rel=0.02), \
                f"{r.key}: hdrh get_value_at_percentile({p}) {theirs} vs csv {csv}"
        checked += 1
    assert checked == len(ir.latency_rows(df)) and checked > 0


def _tail_is_sparse(h, p):
    """hdrh rounds the target count (int(x+0.5)), the Rust crate takes ceil: with a few
    hundred samples the two may land on neighbouring samples far apart. Accept only then."""
    n = h.get_total_count()
    return n * (1 - p / 100.0) < 50


@needs_run
def test_ns_columns_are_cycles_converted_at_tsc_khz(loaded):
    _, df = loaded
    ok = ir.latency_rows(df)
    for r in ok.itertuples():
        assert r.tsc_khz > 0
        for p in ("min", "p50", "p90", "p99", "p999", "max", "mean"):
            c, n = getattr(r, f"{p}_cycles"), getattr(r, f"{p}_ns")
            want = float(ir.cycles_to_ns(c, r.tsc_khz))
            assert _close(n, want, rel=1e-6, abs_=1e-6), f"{r.key}: {p}_ns {n} != {p}_cycles {c} * 1e6 / {r.tsc_khz} = {want}"


@needs_run
def test_percentile_curve_is_monotone_and_consistent(loaded, hists):
    _, df = loaded
    for r in ir.latency_rows(df).itertuples():
        h = hists[(r.probe, r.hlog_tag)]
        cur = ir.percentile_curve(h, r.tsc_khz)
        assert list(cur.columns) == ["percentile", "quantile", "inv_tail", "cycles", "ns"]
        assert cur["ns"].is_monotonic_increasing, r.key
        assert cur["percentile"].is_monotonic_increasing, r.key
        assert cur["percentile"].iloc[0] == 0 and cur["percentile"].iloc[-1] == 100
        assert np.isinf(cur["inv_tail"].iloc[-1])
        at50 = cur.loc[cur["quantile"] == 0.5, "ns"].iloc[0]
        assert _close(at50, r.p50_ns, abs_=ABS_TOL_CYCLES * 1e6 / r.tsc_khz), f"{r.key}: curve at 50% {at50} vs {r.p50_ns}"
        assert _close(cur["ns"].iloc[-1], r.max_ns, abs_=ABS_TOL_CYCLES * 1e6 / r.tsc_khz), r.key


@needs_run
def test_manifest_probes_match_summary_rows(loaded):
    manifest, df = loaded
    entries = manifest["probes"]
    assert len(entries) == len(df), "one manifest probe entry per summary row"
    for e, r in zip(entries, df.itertuples()):
        assert (e["probe"], e["params"], e["method"]) == (r.probe, r.params, r.method)
        assert e["status"] == r.status


# --------------------------------------------------------------------------- no run needed


def test_parse_status():
    assert ir.parse_status("ok") == ("ok", "")
    assert ir.parse_status("unsupported: no MONITOR: x") == ("unsupported", "no MONITOR: x")
    assert ir.parse_status("failed: KVM_RUN: EINTR, rip=0x10000") == ("failed", "KVM_RUN: EINTR, rip=0x10000")
    assert ir.parse_status("weird") == ("unknown", "weird")


def test_row_key_matches_the_harness():
    assert ir.row_key("host.memcpy", "size=64", "per-op") == "host.memcpy {size=64} [per-op]"
    assert ir.row_key("vm.hypercall.null", "", "batched/100") == "vm.hypercall.null [batched/100]"


def test_quantiles_follow_the_rust_rule():
    # 1..1000 recorded once each: ceil(q*n)-th value, reported at bucket top.
    h = HdrHistogram(1, 10_000_000, 3)
    for v in range(1, 1001):
        h.record_value(v * 100)
    got = ir.values_at_quantiles(h, [0.0, 0.5, 0.99, 1.0])
    for g, want in zip(got, [100, 50_000, 99_000, 100_000]):
        assert h.values_are_equivalent(int(g), want), (g, want)
        assert g == h.get_highest_equivalent_value(want) or g == h.get_lowest_equivalent_value(want)


def test_partial_run_and_reasons_round_trip(tmp_path):
    """A hand-made partial run: loads, keeps its unsupported/failed rows, and its one ok
    row's histogram (written with hdrh's own log writer) decodes."""
    run = tmp_path / "20260101T000000Z-abc"
    (run / "hlog").mkdir(parents=True)
    (run / "manifest.json").write_text(
        '{"run_id": "20260101T000000Z-abc", "status": "partial", "stop_reason": "interrupted",'
        ' "started_utc": "x", "finished_utc": null, "command_line": ["ivbench"], "config": {},'
        ' "hist_units_per_cycle": 100, "fingerprint": {"tsc": {"khz": 2000000, "source": "cpuid"}},'
        ' "discovered": {}, "probes": []}')
    h = HdrHistogram(1, 10_000_000, 3)
    for v in (1000, 2000, 3000):
        h.record_value(v)
    # Same line layout as the harness's writer (hdrh's writer has no tags).
    (run / "hlog" / "host.x.hlog").write_text(
        "#[StartTime: 1767225600.000 (seconds since epoch)]\n"
        '"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"\n'
        "Tag=method=per-op,0.010,0.500,30.000," + h.encode().decode() + "\n")
    header = ("probe,params,status,count,min_ns,p50_ns,p90_ns,p99_ns,p999_ns,max_ns,mean_ns,stddev_ns,"
              "min_cycles,p50_cycles,p90_cycles,p99_cycles,p999_cycles,max_cycles,mean_cycles,stddev_cycles,"
              "overhead_cycles,tsc_khz,method,clock,metrics,notes,hlog_tag\n")
    ok = "host.x,,ok,3,5,10,15,15,15,15,10,4,10,20,30,30,30,30,20,8,20,2000000,per-op,tsc,,,method=per-op\n"
    uns = "vm.notify.mwait,,unsupported: no MONITOR in guest CPUID,0,,,,,,,,,,,,,,,,,20,2000000,per-op,tsc,,,\n"
    fail = 'vm.y,\"a=1,b=2\",\"failed: KVM_RUN: EINTR, rip=0x10\",0,,,,,,,,,,,,,,,,,20,2000000,per-op,tsc,,,\n'
    (run / "summary.csv").write_text(header + ok + uns + fail)
    m, df = ir.load_run(run)
    assert df.attrs["run_status"] == "partial" and df.attrs["stop_reason"] == "interrupted"
    assert list(df["status_kind"]) == ["ok", "unsupported", "failed"]
    assert df.loc[2, "params"] == "a=1,b=2"
    assert df.loc[2, "status_reason"] == "KVM_RUN: EINTR, rip=0x10"
    assert df.loc[1, "status_reason"] == "no MONITOR in guest CPUID"
    assert df.loc[1:, "p50_ns"].isna().all()
    hs = ir.histograms(run)
    assert set(hs) == {("host.x", "method=per-op")}
    h2 = hs[("host.x", "method=per-op")]
    assert h2.get_total_count() == 3
    assert h2.values_are_equivalent(int(ir.values_at_quantiles(h2, [0.5])[0]), 2000)
    assert ir.latest_run(tmp_path) == run



@needs_run
def test_compare_is_the_clis_own(loaded):
    """ir.compare asks ``ivbench compare --format json``: a run against itself is "same"
    wherever both sides are ok, and rows that are not ok say why."""
    _, df = loaded
    cmp = ir.compare(RUN, RUN, df, df)
    ok = cmp["status_kind_base"] == "ok"
    assert ok.any()
    # A p50 of exactly 0 ns (a copy as cheap as the timer pair) has no ratio; the rest are 1.
    positive = ok & (cmp["p50_ns_base"] > 0)
    assert (cmp.loc[positive, "p50_ratio"] == 1.0).all()
    assert (cmp.loc[ok, "verdict"] == "same (within noise)").all()
    assert cmp.loc[~ok, "note"].str.len().gt(0).all()
    assert set(cmp["key"]) == set(df["key"])


@needs_run
def test_seed_table_comes_from_the_harness():
    meta, t = ir.seed_table(RUN)
    assert meta["budgets_ns"] == {"10GbE": 67.2, "40GbE": 16.8}
    getppid = t[t["probe"] == "vm.syscall.getppid"].iloc[0]
    assert getppid["seed_cycles_low"] == 1300.0 and getppid["seed_ns"] == 400.0
    figs = ir.seed_figures(RUN)
    assert figs["vm.hypercall.null"][1:] == (1500.0, 1600.0, 500.0)
