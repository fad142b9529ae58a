"""Executes the notebooks headless against a real run and checks what they show.

Runs the notebooks with nbclient (kernel python3) on copies; the committed notebooks keep no
outputs. Executed copies go to ``$IVBENCH_NB_OUT`` when set (to look at them), else to a
pytest temp dir. Needs a run: ``$IVBENCH_RUN`` or the newest under ``$IVBENCH_RUNS_ROOT`` /
``results/runs``; compare_runs uses ``$IVBENCH_BASE`` / ``$IVBENCH_NEW`` or the two newest.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import ivbench_results as ir

HERE = Path(__file__).resolve().parent
NOTEBOOKS = ["explore_run.ipynb", "compare_runs.ipynb", "seed_comparison.ipynb"]


def _root():
    return ir.default_runs_root()


def _explore_run():
    env = os.environ.get("IVBENCH_RUN")
    if env:
        return ir.resolve_run(env, _root())
    runs = ir.list_runs(_root())
    return runs[-1] if runs else None


def _compare_runs():
    try:
        base = ir.resolve_run(os.environ.get("IVBENCH_BASE"), _root(), index=-2)
        new = ir.resolve_run(os.environ.get("IVBENCH_NEW"), _root(), index=-1)
    except FileNotFoundError:
        return None
    return base, new


def _execute(name, tmp_path, env):
    nb = nbformat.read(HERE / name, as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update({k: str(v) for k, v in env.items()})
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(HERE)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    out = Path(os.environ.get("IVBENCH_NB_OUT") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out / name)
    return nb


def _outputs(nb):
    text, images, errors = [], 0, []
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        for o in c.get("outputs", []):
            if o.get("output_type") == "error":
                errors.append(o.get("ename"))
            if o.get("output_type") == "stream":
                text.append(o.get("text", ""))
            data = o.get("data", {})
            if "image/png" in data:
                images += 1
            if "text/plain" in data:
                text.append(data["text/plain"])
            if "text/html" in data:
                text.append(data["text/html"])
    return "\n".join(text), images, errors


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebooks_have_no_outputs(name):
    nb = nbformat.read(HERE / name, as_version=4)
    nbformat.validate(nb)
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.get("outputs") == [] and c.get("execution_count") is None, \
                f"{name}: commit notebooks without outputs (clear them)"


def test_explore_run_executes_and_shows_every_row(tmp_path):
    run = _explore_run()
    if run is None:
        pytest.skip("no ivbench run found (set IVBENCH_RUN)")
    nb = _execute("explore_run.ipynb", tmp_path, {"IVBENCH_RUN": run})
    text, images, errors = _outputs(nb)
    assert not errors
    manifest, df = ir.load_run(run)
    assert str(manifest["run_id"]) in text
    assert images >= 2, "percentile panels and the budget chart"
    # Non-ok rows are shown with their reason, not dropped.
    for r in ir.not_ok_rows(df).itertuples():
        assert r.status_reason[:60] in text.replace("\n    ", " "), f"{r.probe}: reason not shown"
    assert "cores @10GbE (p50/67.2)" in text
    backend = manifest["fingerprint"]["kvm"]["backend"]
    assert str(backend) in text


def test_compare_runs_executes(tmp_path):
    pair = _compare_runs()
    if pair is None:
        run = _explore_run()
        if run is None:
            pytest.skip("no ivbench run found")
        pair = (run, run)   # one run only: compare it with itself
    base, new = pair
    nb = _execute("compare_runs.ipynb", tmp_path, {"IVBENCH_BASE": base, "IVBENCH_NEW": new})
    text, images, errors = _outputs(nb)
    assert not errors
    assert str(base) in text and str(new) in text
    assert "p50_ratio" in text
    _, b = ir.load_run(base)
    _, n = ir.load_run(new)
    both_ok = set(ir.ok_rows(b)["key"]) & set(ir.ok_rows(n)["key"])
    assert images >= (2 if both_ok else 0)


def test_seed_comparison_executes_with_the_harness_figures(tmp_path):
    run = _explore_run()
    if run is None:
        pytest.skip("no ivbench run found (set IVBENCH_RUN)")
    nb = _execute("seed_comparison.ipynb", tmp_path, {"IVBENCH_RUN": run})
    text, images, errors = _outputs(nb)
    assert not errors
    meta, seed = ir.seed_table(run)
    assert "67.2" in text and "16.8" in text
    for op in seed["operation"]:
        assert op in text, f"{op} missing from the seed table"
    ran = seed[seed["status"].eq("ok")]
    assert images >= (1 if not ran.empty else 0)
    # The paths section either draws the run's path rows beside 0.71 Mpps or says there are none.
    assert "beside the 2014 VM-to-VM figure, 0.71 Mpps" in text or "nothing to set beside the 2014 0.71 Mpps" in text
