#!/usr/bin/env bash
# Tests of the notebooks/ part: makes a Python venv, installs requirements.txt, makes two
# quick ivbench runs (unless IVBENCH_RUN names one), executes both notebooks headless
# (nbclient, kernel python3) against them and runs the loader tests. Ends with pytest's
# summary line; exits non-zero on any failure.
#
#   bash notebooks/run_tests.sh                  # fresh quick runs in a temp dir
#   IVBENCH_RUN=results/runs/<run> bash notebooks/run_tests.sh
#
# Environment:
#   IVBENCH_RUN        run to test against (then no sweep is made); compare_runs compares
#                      IVBENCH_BASE (default: the same run) with it
#   IVBENCH_NB_VENV    venv to use/create (default notebooks/.venv, git-ignored)
#   IVBENCH_NB_OUT     keep the executed notebooks there (default: pytest temp dir)
#   PYTHON             interpreter that makes the venv (default python3, >= 3.9)
#   CARGO_TARGET_DIR   honoured by the sweep's cargo build
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
PY="${PYTHON:-python3}"
VENV="${IVBENCH_NB_VENV:-$HERE/.venv}"
t0=$(date +%s)

echo "== notebooks: python"
"$PY" -c 'import sys; assert sys.version_info >= (3, 9), sys.version; print(sys.executable, sys.version.split()[0])'

# --- venv (re-made when requirements.txt changes) ---
stamp="$VENV/.ivbench-requirements.sha256"
want="$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  rm -rf "$VENV"
  if ! "$PY" -m venv "$VENV" 2>/tmp/ivbench-nb-venv.err; then
    # Debian's own python3 ships venv/ensurepip separately.
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      echo "python3 -m venv failed; installing python3-venv"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      rm -rf "$VENV"
      "$PY" -m venv "$VENV"
    else
      cat /tmp/ivbench-nb-venv.err >&2
      echo "cannot make a venv: install python3-venv" >&2
      exit 1
    fi
  fi
  echo "== notebooks: installing requirements into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$HERE/requirements.txt"
  echo "$want" > "$stamp"
fi
VPY="$VENV/bin/python"
"$VPY" -m pip list --disable-pip-version-check 2>/dev/null \
  | grep -iE '^(hdrhistogram|numpy|pandas|matplotlib|nbclient|nbformat|ipykernel|pytest) ' | tr -s ' ' | paste -sd, -

# --- runs ---
TMP="$(mktemp -d /tmp/ivbench-nb.XXXXXX)"
trap 'rm -rf "$TMP"' EXIT
abspath() { if [ -d "$1" ]; then (cd "$1" && pwd); else echo "$1"; fi; }   # run ids stay as they are
if [ -n "${IVBENCH_RUN:-}" ]; then
  IVBENCH_RUN="$(abspath "$IVBENCH_RUN")"
  IVBENCH_NEW="$(abspath "${IVBENCH_NEW:-$IVBENCH_RUN}")"
  IVBENCH_BASE="$(abspath "${IVBENCH_BASE:-$IVBENCH_RUN}")"
  export IVBENCH_RUN IVBENCH_NEW IVBENCH_BASE
  echo "== notebooks: testing against $IVBENCH_RUN"
else
  echo "== notebooks: two quick sweeps into $TMP/runs"
  command -v cargo >/dev/null || { echo "cargo not found (or set IVBENCH_RUN)" >&2; exit 1; }
  for i in 1 2; do
    (cd "$REPO" && cargo run --release -q -- sweep --quick --no-report --out "$TMP/runs") >"$TMP/sweep$i.log" 2>&1 \
      || { tail -40 "$TMP/sweep$i.log" >&2; echo "sweep $i failed" >&2; exit 1; }
    grep -E '^run directory:' "$TMP/sweep$i.log" || true
    sleep 1   # run ids start with the UTC second: keep the two in order
  done
  export IVBENCH_RUNS_ROOT="$TMP/runs"
  unset IVBENCH_BASE IVBENCH_NEW
fi

# --- tests: loader checks against the run, then both notebooks executed ---
echo "== notebooks: pytest (setup took $(( $(date +%s) - t0 ))s)"
cd "$HERE"
# pytest's summary line is the last line printed; its exit code is the script's.
set +e
"$VPY" -m pytest -p no:cacheprovider -q -rs test_ivbench_results.py test_notebooks.py
rc=$?
set -e
exit $rc
