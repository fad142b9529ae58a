"""Read an ivbench run directory (manifest.json, summary.csv, hlog/*.hlog) into Python.

Read-only: nothing here runs a probe. A run directory is

    results/runs/<UTC>-<id>/
        manifest.json      fingerprint, config, status complete|partial, probes
        summary.csv        one row per probe x parameter point x method
        hlog/<probe>.hlog  HdrHistogram interval log, one tagged histogram per row

Histogram values are TSC cycles x ``manifest["hist_units_per_cycle"]`` (100) with the
timer overhead already subtracted; ns = cycles * 1e6 / tsc_khz (the harness's single
conversion, ``stats::cycles_to_ns``).

Rows whose status is not ``ok`` ("unsupported: <reason>", "failed: <reason>") are kept
in every table with their reason in ``status_reason``; their latency columns are NaN, so
they can never be plotted as numbers by accident. Use ``ok_rows`` / ``not_ok_rows``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

import numpy as np
import pandas as pd
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

#: Time budget per 64-byte packet (64 B + 20 B preamble/IFG, x 8 bit) at line rate.
BUDGET_10GBE_NS = 67.2
BUDGET_40GBE_NS = 16.8

# The 2014 seed talk's figures are not copied here: ``seed_table`` and ``seed_figures``
# take them from ``ivbench show --format json`` (harness/src/report/seed.rs), and
# ``compare`` takes its verdicts from ``ivbench compare --format json``.

#: summary.csv columns holding numbers (the rest are text).
NUMERIC_COLUMNS = [
    "count",
    "min_ns", "p50_ns", "p90_ns", "p99_ns", "p999_ns", "max_ns", "mean_ns", "stddev_ns",
    "min_cycles", "p50_cycles", "p90_cycles", "p99_cycles", "p999_cycles", "max_cycles",
    "mean_cycles", "stddev_cycles", "overhead_cycles", "tsc_khz",
    "mpps", "gbit_s", "sent", "received", "dropped",
]
TEXT_COLUMNS = ["probe", "params", "status", "method", "clock", "metrics", "notes", "hlog_tag", "variant", "partial", "contention"]

STATUS_KINDS = ("ok", "unsupported", "failed")


# --------------------------------------------------------------------------- runs


def parse_status(status: str) -> Tuple[str, str]:
    """``"ok"`` -> ("ok", ""); ``"unsupported: no MONITOR"`` -> ("unsupported", "no MONITOR").

    Anything else is ("unknown", <the text>) rather than an exception, so a newer harness
    status still shows up in the tables.
    """
    s = (status or "").strip()
    if s == "ok":
        return "ok", ""
    for kind in ("unsupported", "failed"):
        prefix = kind + ": "
        if s.startswith(prefix):
            return kind, s[len(prefix):]
        if s == kind:
            return kind, "(no reason given)"
    return "unknown", s


def row_key(probe: str, params: str, method: str, variant: str = "") -> str:
    """The key that identifies a row across runs (same text as the harness's ``SummaryRow::key``)."""
    key = f"{probe} {{{params}}} [{method}]" if params else f"{probe} [{method}]"
    return f"{key} <{variant}>" if variant else key


def list_runs(root) -> list:
    """Run directories (those holding a manifest.json) under ``root``, oldest first.

    Run directories are named ``<UTC>-<id>``, so name order is time order (the harness's
    ``ivbench show latest`` sorts the same way).
    """
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "manifest.json").is_file())


def latest_run(root) -> Path:
    """The newest run directory under ``root``; FileNotFoundError if there is none."""
    runs = list_runs(root)
    if not runs:
        raise FileNotFoundError(f"no ivbench run (directory with manifest.json) under {Path(root).resolve()}")
    return runs[-1]


def resolve_run(value: Optional[str], root, index: int = -1) -> Path:
    """A run directory from an env-var style value: a path, a run id under ``root``, or
    empty / ``latest`` for the newest (``index=-2`` for the one before it)."""
    if value and value != "latest":
        p = Path(value)
        if (p / "manifest.json").is_file():
            return p
        q = Path(root) / value
        if (q / "manifest.json").is_file():
            return q
        raise FileNotFoundError(f"{value!r} is not a run directory (no manifest.json there or under {root})")
    runs = list_runs(root)
    if len(runs) < abs(index):
        raise FileNotFoundError(f"need {abs(index)} run(s) under {Path(root).resolve()}, found {len(runs)}")
    return runs[index]


def load_manifest(run_path) -> dict:
    with open(Path(run_path) / "manifest.json", encoding="utf-8") as f:
        return json.load(f)


def load_summary(run_path) -> pd.DataFrame:
    """summary.csv as a DataFrame, with ``status_kind``, ``status_reason`` and ``key`` added.

    Text columns stay text (empty, never NaN); numeric columns are floats and NaN where the
    CSV is empty (every latency column of a non-ok row).
    """
    path = Path(run_path) / "summary.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    for c in TEXT_COLUMNS:
        if c not in df.columns:
            df[c] = ""
    for c in NUMERIC_COLUMNS:
        if c in df.columns:
            df[c] = pd.to_numeric(df[c].replace("", np.nan), errors="coerce").astype(float)
        else:
            df[c] = np.nan
    parsed = [parse_status(s) for s in df["status"]]
    df["status_kind"] = [k for k, _ in parsed]
    df["status_reason"] = [r for _, r in parsed]
    df["key"] = [row_key(p, q, m, v) for p, q, m, v in zip(df["probe"], df["params"], df["method"], df["variant"])]
    df["group"] = [probe_group(p) for p in df["probe"]]
    # A non-ok row has no measurement: make sure nothing numeric leaks into plots.
    bad = df["status_kind"] != "ok"
    lat = [c for c in NUMERIC_COLUMNS if c not in ("count", "tsc_khz", "overhead_cycles")]
    df.loc[bad, lat] = np.nan
    df["count"] = df["count"].fillna(0).astype("int64")
    return df


def load_run(run_path) -> Tuple[dict, pd.DataFrame]:
    """(manifest dict, summary DataFrame) of one run directory.

    A partial run (``manifest["status"] == "partial"``, interrupted) loads the same way:
    its summary holds the rows recorded before the stop. The run's status and stop reason
    are copied to ``df.attrs`` so a table can say it is partial.
    """
    run_path = Path(run_path)
    manifest = load_manifest(run_path)
    df = load_summary(run_path)
    df.attrs["run_id"] = manifest.get("run_id", run_path.name)
    df.attrs["run_status"] = manifest.get("status", "unknown")
    df.attrs["stop_reason"] = manifest.get("stop_reason")
    df.attrs["path"] = str(run_path)
    return manifest, df


def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status_kind"] == "ok"]


def latency_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Ok rows with latency samples (and so a histogram). A throughput-only row (a DPDK
    baseline: counters, no per-packet stamps) is ok with count 0 and ``mpps`` set."""
    ok = ok_rows(df)
    return ok[ok["count"] > 0]


def not_ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that did not measure, with their reason: shown in a table, never plotted."""
    return df[df["status_kind"] != "ok"][["probe", "params", "method", "status_kind", "status_reason"]]


def probe_group(probe: str) -> str:
    """``vm.notify.poll`` -> ``vm.notify``; ``host.memcpy`` -> ``host.memcpy``."""
    parts = probe.split(".")
    return ".".join(parts[:2]) if len(parts) >= 3 else probe


def fingerprint_essentials(manifest: dict) -> Dict[str, object]:
    """The few fingerprint facts that decide how to read the numbers, as a flat dict.

    Missing fields are reported as "(not recorded)" rather than guessed.
    """
    fp = manifest.get("fingerprint") or {}
    nr = "(not recorded)"

    def get(d, *path, default=nr):
        for p in path:
            if not isinstance(d, dict) or p not in d:
                return default
            d = d[p]
        return d

    cpu = fp.get("cpu") if isinstance(fp.get("cpu"), dict) else {}
    tsc = fp.get("tsc") if isinstance(fp.get("tsc"), dict) else {}
    kvm = fp.get("kvm") if isinstance(fp.get("kvm"), dict) else {}
    host = fp.get("host") if isinstance(fp.get("host"), dict) else {}
    gb = get(manifest, "discovered", "guest_backend", default={})
    cpu_name = cpu.get("brand") or cpu.get("model_name") or nr
    if "family" in cpu and "model" in cpu:
        cpu_name = f"{cpu_name} (family {cpu['family']}, model {cpu['model']}, stepping {cpu.get('stepping', '?')})"
    out = {
        "run_id": manifest.get("run_id", nr),
        "run status": manifest.get("status", nr),
        "stop reason": manifest.get("stop_reason") or "",
        "started (UTC)": manifest.get("started_utc", nr),
        "finished (UTC)": manifest.get("finished_utc") or nr,
        "command line": " ".join(manifest.get("command_line") or []) or nr,
        "git commit": get(fp, "ivbench", "git_commit"),
        "CPU": cpu_name,
        "CPU vendor": cpu.get("vendor", nr),
        "kernel": host.get("kernel_release", nr),
        "TSC kHz": tsc.get("khz", nr),
        "TSC source": tsc.get("source", nr),
        "TSC invariant": tsc.get("invariant", nr),
        "KVM backend": kvm.get("backend", nr),
        "nested (host is itself a VM)": _nested(fp),
    }
    if isinstance(gb, dict) and gb:
        for k, v in gb.items():
            if isinstance(v, list):
                v = "; ".join(map(str, v))
            out[f"guest backend: {k}"] = v
    return out


def _nested(fp: dict):
    """'Is this host a VM': ``cpu.nested`` when recorded (with the hypervisor vendor), else
    any field named like it; "(not recorded)" when the fingerprint says nothing."""
    cpu = fp.get("cpu") if isinstance(fp.get("cpu"), dict) else {}
    if "nested" in cpu:
        vendor = cpu.get("hypervisor_vendor")
        return f"{cpu['nested']}" + (f" (hypervisor {vendor})" if cpu["nested"] and vendor else "")
    hits = []

    def walk(d, path=""):
        if isinstance(d, dict):
            for k, v in d.items():
                kp = f"{path}.{k}" if path else k
                if any(w in k.lower() for w in ("nested", "hypervisor", "virtualized", "in_vm")):
                    if not isinstance(v, (dict, list)):
                        hits.append(f"{kp}={v}")
                walk(v, kp)

    walk(fp)
    return "; ".join(hits) if hits else "(not recorded)"


# --------------------------------------------------------------------------- histograms


def read_hlog(path) -> Dict[str, HdrHistogram]:
    """Every tagged histogram of one interval log, tag -> histogram.

    Uses hdrh's own ``HistogramLogReader`` (V2 deflate payloads, base64). An untagged
    interval is returned under ``"default"``, as the harness does.
    """
    reader = HistogramLogReader(str(path), None)
    out: Dict[str, HdrHistogram] = {}
    try:
        while True:
            h = reader.get_next_interval_histogram()
            if h is None:
                break
            tag = h.get_tag() or "default"
            out[tag] = h
    finally:
        reader.input_file.close()
    return out


def histograms(run_path) -> Dict[Tuple[str, str], HdrHistogram]:
    """{(probe, tag): histogram} for every ``hlog/<probe>.hlog`` of a run.

    Join with summary rows on (``probe``, ``hlog_tag``); a non-ok row has an empty tag and
    no histogram.
    """
    hdir = Path(run_path) / "hlog"
    out: Dict[Tuple[str, str], HdrHistogram] = {}
    if not hdir.is_dir():
        return out
    for p in sorted(hdir.glob("*.hlog")):
        probe = p.name[: -len(".hlog")]
        for tag, h in read_hlog(p).items():
            out[(probe, tag)] = h
    return out


def histogram_for(hists: Dict[Tuple[str, str], HdrHistogram], row) -> Optional[HdrHistogram]:
    """The histogram of one summary row (a Series or namedtuple with probe, hlog_tag)."""
    tag = row["hlog_tag"] if isinstance(row, (pd.Series, dict)) else row.hlog_tag
    probe = row["probe"] if isinstance(row, (pd.Series, dict)) else row.probe
    if not tag:
        return None
    return hists.get((probe, tag))


def _buckets(hist: HdrHistogram):
    """Recorded buckets of a histogram: (highest equivalent value, count) arrays, in value
    order. Values are in histogram units (cycles x 100)."""
    n = hist.counts_len
    counts = np.fromiter((hist.counts[i] for i in range(n)), dtype=np.int64, count=n)
    idx = np.nonzero(counts)[0]
    lo = np.array([hist.get_value_from_index(int(i)) for i in idx], dtype=np.int64)
    hi = np.array([hist.get_highest_equivalent_value(int(v)) for v in lo], dtype=np.int64)
    low_eq = np.array([hist.get_lowest_equivalent_value(int(v)) for v in lo], dtype=np.int64)
    return low_eq, hi, counts[idx]


def values_at_quantiles(hist: HdrHistogram, quantiles: Iterable[float]) -> np.ndarray:
    """Values (histogram units) at quantiles in [0, 1], with the Rust ``hdrhistogram``
    crate's rule (the one that wrote summary.csv): the first bucket whose cumulative count
    reaches ceil(q * total), reported as that bucket's highest equivalent value (lowest for
    q == 0)."""
    q = np.asarray(list(quantiles), dtype=float)
    low_eq, hi, counts = _buckets(hist)
    total = int(counts.sum())
    if total == 0:
        return np.full(q.shape, np.nan)
    cum = np.cumsum(counts)
    target = np.maximum(np.ceil(np.minimum(q, 1.0) * total), 1)
    i = np.searchsorted(cum, target, side="left")
    i = np.minimum(i, len(cum) - 1)
    return np.where(q == 0.0, low_eq[i], hi[i]).astype(float)


def units_to_cycles(units, units_per_cycle: float = 100.0):
    return np.asarray(units, dtype=float) / units_per_cycle


def cycles_to_ns(cycles, tsc_khz: float):
    """The harness's conversion: ns = cycles * 1e6 / tsc_khz (NaN when tsc_khz is 0/unknown)."""
    if not tsc_khz or (isinstance(tsc_khz, float) and math.isnan(tsc_khz)):
        return np.full(np.shape(cycles), np.nan)
    return np.asarray(cycles, dtype=float) * 1e6 / float(tsc_khz)


def percentile_curve(hist: HdrHistogram, tsc_khz: float, units_per_cycle: float = 100.0,
                     ticks_per_half_distance: int = 5) -> pd.DataFrame:
    """The percentile distribution of a histogram, ready for a log "1/(1-q)" x-axis.

    Points sit at q = 1 - 2^(-i/ticks) (as HdrHistogram's percentile output), from 0 up to
    the last q whose tail still holds at least one sample, then the maximum (q = 1, whose
    ``inv_tail`` is inf: drop it on a log axis or draw it as a marker).

    Columns: percentile (0-100), quantile, inv_tail = 1/(1-q), cycles, ns.
    """
    total = hist.get_total_count()
    qs = [0.0]
    i = 1
    while True:
        q = 1.0 - 2.0 ** (-i / ticks_per_half_distance)
        if not total or (1.0 - q) * total < 1.0:
            break
        if i > 60 * ticks_per_half_distance:
            break
        qs.append(q)
        i += 1
    qs.append(1.0)
    units = values_at_quantiles(hist, qs)
    cycles = units_to_cycles(units, units_per_cycle)
    q = np.array(qs)
    with np.errstate(divide="ignore"):
        inv = np.where(q < 1.0, 1.0 / (1.0 - q), np.inf)
    return pd.DataFrame({
        "percentile": q * 100.0,
        "quantile": q,
        "inv_tail": inv,
        "cycles": cycles,
        "ns": cycles_to_ns(cycles, tsc_khz),
    })


def hist_stats(hist: HdrHistogram, tsc_khz: float, units_per_cycle: float = 100.0) -> Dict[str, float]:
    """count, p50/p90/p99/p999 in cycles and ns from a histogram alone (for cross-checks)."""
    names = ["p50", "p90", "p99", "p999"]
    units = values_at_quantiles(hist, [0.5, 0.9, 0.99, 0.999])
    out: Dict[str, float] = {"count": float(hist.get_total_count())}
    for n, u in zip(names, units):
        c = float(u) / units_per_cycle
        out[f"{n}_cycles"] = c
        out[f"{n}_ns"] = float(cycles_to_ns(c, tsc_khz))
    return out


# --------------------------------------------------------------------------- tables


def pick_rows(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (probe, params): a per-op ok row if there is one, else any ok row, else
    the first row (which then shows why it did not run). Same rule as the harness's seed
    table: the 2014 figures are single-operation round trips."""
    def rank(r):
        if r["status_kind"] == "ok" and r["method"] == "per-op":
            return 0
        if r["status_kind"] == "ok":
            return 1
        return 2
    d = df.copy()
    d["_rank"] = d.apply(rank, axis=1)
    d["_order"] = range(len(d))
    d = d.sort_values(["_rank", "_order"]).drop_duplicates(["probe", "params"]).sort_values("_order")
    return d.drop(columns=["_rank", "_order"])


def cores_needed(df: pd.DataFrame) -> pd.DataFrame:
    """For every row: how many cores, each doing this operation once per packet, keep up
    with 64-byte line rate (p50_ns / budget). Non-ok rows keep their reason and NaN."""
    out = df[["probe", "params", "method", "status_kind", "status_reason", "p50_ns"]].copy()
    out["cores @10GbE (p50/67.2)"] = out["p50_ns"] / BUDGET_10GBE_NS
    out["cores @40GbE (p50/16.8)"] = out["p50_ns"] / BUDGET_40GBE_NS
    return out


def ivbench_binary() -> str:
    """The ivbench to ask: ``$IVBENCH_BIN``, else the checkout's release build, else PATH."""
    if os.environ.get("IVBENCH_BIN"):
        return os.environ["IVBENCH_BIN"]
    built = Path(__file__).resolve().parent.parent / "target" / "release" / "ivbench"
    if built.is_file():
        return str(built)
    found = shutil.which("ivbench")
    if found:
        return found
    raise FileNotFoundError("no ivbench binary: build it (cargo build --release) or set IVBENCH_BIN")


def _ivbench_json(args, ok_codes=(0,)) -> dict:
    p = subprocess.run([ivbench_binary(), *args], capture_output=True, text=True)
    if p.returncode not in ok_codes:
        raise RuntimeError(f"ivbench {' '.join(args)} exited {p.returncode}: {p.stderr.strip()}")
    return json.loads(p.stdout)


def compare(base_run, new_run, base: pd.DataFrame, new: pd.DataFrame, threshold: float = 0.10) -> pd.DataFrame:
    """The harness's own comparison (``ivbench compare BASE NEW --format json``): verdicts,
    ratios and noise factors exactly as the CLI and CI judge them, one row per key, joined
    with each run's summary columns (``_base``/``_new``) for plotting. Sorted by the larger
    |log2 ratio| of p50 and p99. ``attrs`` keep the CLI's warnings and verdict counts."""
    doc = _ivbench_json(["compare", str(base_run), str(new_run), "--format", "json", "--threshold", str(threshold)], ok_codes=(0, 1))
    if not doc.get("compared", True):
        out = pd.DataFrame(columns=["key", "verdict", "note", "p50_ratio", "p99_ratio", "change"])
        out.attrs["warnings"] = [doc.get("reason", "")]
        return out
    recs = []
    for r in doc["rows"]:
        rec = {"key": r["key"], "verdict": r["verdict"], "note": r["note"]}
        for pct in ("p50", "p99"):
            m = r.get(pct) or {}
            rec[f"{pct}_ns_base"] = m.get("base_ns", np.nan)
            rec[f"{pct}_ns_new"] = m.get("new_ns", np.nan)
            rec[f"{pct}_ratio"] = m.get("ratio", np.nan)
            rec[f"{pct}_noise"] = m.get("noise_factor", np.nan)
        recs.append(rec)
    cmp = pd.DataFrame(recs)
    cols = ["key", "probe", "params", "method", "status_kind", "status_reason", "hlog_tag", "tsc_khz"]
    cmp = cmp.merge(base[cols].add_suffix("_base").rename(columns={"key_base": "key"}), on="key", how="left")
    cmp = cmp.merge(new[cols].add_suffix("_new").rename(columns={"key_new": "key"}), on="key", how="left")
    cmp["probe"] = cmp["probe_new"].fillna(cmp["probe_base"])
    ratios = cmp[["p50_ratio", "p99_ratio"]].astype(float)
    cmp["change"] = np.log2(ratios.where(ratios > 0)).abs().max(axis=1)
    cmp = cmp.sort_values("change", ascending=False, na_position="last").reset_index(drop=True)
    cmp.attrs["warnings"] = doc.get("warnings", [])
    cmp.attrs["counts"] = doc.get("counts", {})
    cmp.attrs["threshold"] = doc.get("threshold")
    return cmp


def seed_table(run_path) -> Tuple[dict, pd.DataFrame]:
    """The seed table of a run as the harness computes it (``ivbench show --format json``):
    (``{"budgets_ns": ..., "seed_tsc_ghz": ...}``, one row per operation of the talk)."""
    doc = _ivbench_json(["show", str(run_path), "--format", "json"])
    seed = doc["seed"]
    rows = []
    for line in seed["lines"]:
        m = line.get("measured") or {}
        s = line.get("seed") or {}
        rows.append({
            "operation": line["operation"], "probe": line["probe"], "status": line["status"],
            "method": m.get("method", ""), "p50_cycles": m.get("p50_cycles", np.nan), "p50_ns": m.get("p50_ns", np.nan),
            "p99_cycles": m.get("p99_cycles", np.nan), "p99_ns": m.get("p99_ns", np.nan),
            "seed_cycles_low": s.get("cycles_low", np.nan), "seed_cycles_high": s.get("cycles_high", np.nan),
            "seed_ns": s.get("ns_approx", np.nan), "seed_label": s.get("label", ""), "seed_note": line["seed_note"],
            "ratio_to_seed_cycles": line.get("ratio_to_seed_cycles"),
            "cores_needed_10gbe": line.get("cores_needed_10gbe"), "cores_needed_40gbe": line.get("cores_needed_40gbe"),
        })
    return {k: v for k, v in seed.items() if k != "lines"}, pd.DataFrame(rows)


def seed_figures(run_path) -> Dict[str, Tuple[str, float, float, float]]:
    """probe -> (label, low cycles, high cycles, the talk's ns) of the talk's figures, from the
    harness (for reference markers in plots)."""
    _, t = seed_table(run_path)
    return {r.probe: (f"{r.operation} (2014)", r.seed_cycles_low, r.seed_cycles_high, r.seed_ns)
            for r in t.itertuples() if not math.isnan(r.seed_cycles_low)}


def default_runs_root(start: Optional[Path] = None) -> Path:
    """``$IVBENCH_RUNS_ROOT`` or ``<repo>/results/runs`` (found from this file's folder)."""
    env = os.environ.get("IVBENCH_RUNS_ROOT")
    if env:
        return Path(env)
    here = Path(start) if start else Path(__file__).resolve().parent
    return (here.parent / "results" / "runs").resolve()


# --------------------------------------------------------------------------- plotting

#: x positions (1/(1-q)) and labels of a percentile axis.
PERCENTILE_TICKS = [1, 2, 10, 100, 1_000, 10_000, 100_000, 1_000_000]
PERCENTILE_LABELS = ["0%", "50%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"]


def plot_percentile_curve(ax, hist: HdrHistogram, tsc_khz: float, units_per_cycle: float = 100.0,
                          style: str = "-", label: Optional[str] = None, color=None):
    """Draw one histogram's percentile curve on a 1/(1-q) x-axis (call
    ``setup_percentile_axes`` after). The maximum (q = 1) is a dot at x = count, the "1 in
    count" position. Values below 0.01 ns are drawn at 0.01 (log axis). Returns the line."""
    cur = percentile_curve(hist, tsc_khz, units_per_cycle)
    fin = cur[np.isfinite(cur["inv_tail"])]
    kw = {"color": color} if color is not None else {}
    line, = ax.plot(fin["inv_tail"], fin["ns"].clip(lower=1e-2), style, lw=1.3, label=label, **kw)
    x_max = max(float(hist.get_total_count()), float(fin["inv_tail"].max()))
    ax.plot([x_max], [max(float(cur["ns"].iloc[-1]), 1e-2)], "o", color=line.get_color(), ms=3)
    return line


def setup_percentile_axes(ax, title: str = "", budgets: bool = True):
    """Log/log axes with percentile labels on x, plain numbers in ns on y, and the 64-byte
    line-rate budgets as dashed lines."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    right = max(2.0, ax.get_xlim()[1] * 1.5) if ax.lines else 10.0
    ticks = [t for t in PERCENTILE_TICKS if t <= right]
    ax.set_xticks(ticks)
    ax.set_xticklabels(PERCENTILE_LABELS[: len(ticks)], fontsize=7)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(0.9, right)
    if budgets:
        for b, name in [(BUDGET_10GBE_NS, "10GbE 67.2 ns"), (BUDGET_40GBE_NS, "40GbE 16.8 ns")]:
            ax.axhline(b, ls="--", lw=0.8, color="grey")
            ax.annotate(name, (1.0, b), fontsize=6, color="grey", va="bottom")
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_ylabel("ns")
    ax.set_xlabel("percentile (x = 1/(1-q), log)", fontsize=7)
    ax.grid(True, which="major", alpha=0.3)
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    lo, hi = ax.get_ylim()
    # Label minor ticks only when the axis spans too few decades to have major labels.
    ax.yaxis.set_minor_formatter(plain if lo > 0 and hi / lo < 30 else NullFormatter())
