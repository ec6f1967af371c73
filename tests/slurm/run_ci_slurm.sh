#!/usr/bin/env bash
# CI part for the cluster path, called by .ci/run (as root, on a fresh Debian machine,
# no stdin): installs Chromium (the report test) and starts the one-node SLURM
# (start_cluster.sh), runs the `slurm` and `slow` tests against it, and stops the cluster
# by PID whatever the outcome.
#
#   tests/slurm/run_ci_slurm.sh [extra pytest args]
#
# Python: $PYTHON, else the repository's .venv, else python3 on PATH.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [[ -n "${PYTHON:-}" ]]; then
    PY="$PYTHON"
elif [[ -x "$ROOT/.venv/bin/python" ]]; then
    PY="$ROOT/.venv/bin/python"
else
    PY="$(command -v python3)"
fi
# SLURM jobs re-run `python -m snakemake` and the rule scripts: they must find this
# interpreter's snakemake first on PATH (sbatch exports the environment to the job).
export PATH="$(dirname "$PY"):$PATH"

# the report test renders `snakemake --report` in a real browser (tests/report_browser.py): Debian's
# Chromium and a font, installed once; CELLGNN_REQUIRE_BROWSER makes the test fail, not skip, without it
if ! command -v chromium >/dev/null 2>&1; then
    echo "run_ci_slurm.sh: installing chromium (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends chromium fonts-liberation >&2
fi
export CELLGNN_REQUIRE_BROWSER=1

STATE="$(mktemp -d /tmp/cellgnn-slurm-ci.XXXXXX)"
start=$(date +%s)
eval "$("$ROOT/tests/slurm/start_cluster.sh" "$STATE" </dev/null)"
trap '"$ROOT/tests/slurm/stop_cluster.sh" "$STATE"' EXIT
echo "run_ci_slurm.sh: cluster up in $(( $(date +%s) - start )) s (SLURM_CONF=$SLURM_CONF)"

cd "$ROOT"
"$PY" -m pytest -m "slurm or slow" -q -p no:cacheprovider "$@" </dev/null
