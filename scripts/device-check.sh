#!/usr/bin/env bash
# GPU readiness check (issue 15, item 3): scripts/device-check.sh [--dry-run] OUT_DIR [--budget-s S] [--parts ...]
#
# Runs zooprune from this source tree (PYTHONPATH=src; no install, no network) with the python that
# has torch + transformers: $PYTHON if set, else .venv/bin/python if present, else python3. Writes
# OUT_DIR/device_check.json (rewritten after every part). Killed after 480 s whatever happens; the
# Python side keeps to its own --budget-s (default 420 s). --dry-run: CPU, tiny shapes, seconds.
# All the logic is in src/zooprune/bench/device_check.py; see benchmarks/README.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${PYTHON:-}" ]; then
    py="$PYTHON"
elif [ -x "$root/.venv/bin/python" ]; then
    py="$root/.venv/bin/python"
else
    py="python3"
fi
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec timeout --signal=TERM --kill-after=10 480 "$py" -m zooprune.bench.device_check "$@"
