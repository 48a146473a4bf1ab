#!/usr/bin/env bash
# The whole testbed v2 recipe from scratch (docs/testbed-v2.md, "A fresh run"), in three gated steps:
#   1. clip (30 min) with the fixed position table, layout hard negatives and patch reconstruction
#      from the first step; gate: the tower's column probe (benchmarks/testbed_feature_probes.py)
#      must reach 0.50 (chance 0.07);
#   2. align (25 min), projector and Llama, on that tower; then the method-free statistics
#      (zooprune.testbed.validate, recorded, not a gate: run 6 answers place questions right 0.95 of
#      the time while the linear column probe on its projected tokens stays at chance);
#   3. qa (120 min) with letter and place drills, held-out validation every 10 minutes.
# About 3 h of training compute: run it alone, in the background, and run it again after a kill or
# a session end; every step resumes from WORK/ckpt.pt, and a step whose output exists is skipped.
#
#   nohup scripts/train-testbed-v2.sh runs/testbed-v2-fresh > runs/testbed-v2-fresh.log 2>&1 &
set -euo pipefail

WORK=${1:?usage: scripts/train-testbed-v2.sh WORK_DIR}
PY=.venv/bin/python
mkdir -p "$WORK"

train() {  # train OUT [extra args]: one step of the run, resumed when a checkpoint exists
    local out=$1
    shift
    local resume=()
    [[ -f $WORK/ckpt.pt ]] && resume=(--resume)
    "$PY" -m zooprune.testbed.train --variant v2 --work "$WORK" --out "$out" "${resume[@]}" \
        --fixed-position 10 --hard-negatives layout --recon 1 \
        --clip-minutes 30 --align-minutes 25 --qa-minutes 120 \
        --choice-drill 0.15 --place-drill 0.15 --eval-every 10 "$@"
}

gate() {  # gate NAME JSON PYTHON_EXPR THRESHOLD: stop the run unless the probe reached it
    local value
    value=$("$PY" -c "import json, sys; d = json.load(open(sys.argv[1])); print($3)" "$2")
    echo "gate $1: $value (needs >= $4)"
    if ! "$PY" -c "import sys; sys.exit(float(sys.argv[1]) < float(sys.argv[2]))" "$value" "$4"; then
        echo "gate $1 failed: the next stage is not run (see docs/testbed-v2.md)" >&2
        exit 1
    fi
}

date
if [[ ! -f $WORK/feature_probes.json ]]; then
    train "$WORK/model-clip" --stop-after clip
    "$PY" benchmarks/testbed_feature_probes.py --model "$WORK/model-clip" --out "$WORK/feature_probes.json"
fi
gate "tower column" "$WORK/feature_probes.json" "[*d['probes'].values()][0]['column']['acc']" 0.50

date
if [[ ! -f $WORK/validate-align.json ]]; then
    train "$WORK/model-align" --stop-after align
    "$PY" -m zooprune.testbed.validate --model "$WORK/model-align" --variant v2 --n 96 \
        --out "$WORK/validate-align.json"
fi
echo "column probe on the projected tokens after align (recorded):" \
    "$("$PY" -c "import json, sys; print(json.load(open(sys.argv[1]))['position_probe_tokens']['col']['acc_all'])" \
    "$WORK/validate-align.json")"

date
if [[ ! -f $WORK/ckpt.pt ]]; then
    echo "no checkpoint in $WORK: qa continues the aligned model, run the steps above first" >&2
    exit 1
fi
train "$WORK/model"
date
echo "trained: $WORK/model (held-out curve in $WORK/log.jsonl)"
