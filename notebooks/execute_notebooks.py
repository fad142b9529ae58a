"""Execute the notebooks headless (nbclient, kernel python3) and save executed copies.

    python execute_notebooks.py OUT_DIR [NOTEBOOK ...]

Each notebook runs with this folder as its working directory (so `import ivbench_results`
works) and the caller's environment (IVBENCH_RUN, IVBENCH_BASE, IVBENCH_NEW,
IVBENCH_RUNS_ROOT). The executed copies go to OUT_DIR, never over the committed notebooks,
which are kept without outputs. Exits non-zero when a cell raises.
"""

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

HERE = Path(__file__).resolve().parent
DEFAULT = ["explore_run.ipynb", "compare_runs.ipynb"]


def main(argv):
    if not argv:
        print(__doc__)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    names = argv[1:] or DEFAULT
    failed = 0
    for name in names:
        src = HERE / name
        nb = nbformat.read(src, as_version=4)
        client = NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(HERE)}})
        t0 = time.monotonic()
        try:
            client.execute()
            status = "ok"
        except CellExecutionError as e:
            status = "FAILED"
            failed += 1
            print(str(e)[-3000:], file=sys.stderr)
        dst = out / name
        nbformat.write(nb, dst)
        n_img = sum(1 for c in nb.cells if c.cell_type == "code"
                    for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
        print(f"notebook {name}: {status} in {time.monotonic() - t0:.1f}s, {n_img} figure(s) -> {dst}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
