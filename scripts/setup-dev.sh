#!/usr/bin/env bash
# Development environment in .venv, from scratch: CPU torch from local disk (torch==2.13.0;
# never torchvision beside it), the package with its test and demo extras, Playwright (driving
# Debian's chromium, installed here when we are root and it is missing), and lmms-eval for the
# plugin test (scripts/install_lmms_eval.sh). Used by the README's test command and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: Debian's chromium is missing and we are not root: the demo's browser test will be skipped" >&2
  fi
fi

rm -rf .venv
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test,demo]" playwright
bash scripts/install_lmms_eval.sh
python -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__)"
if python -c "import torchvision" 2>/dev/null; then
  echo "torchvision is installed: it breaks transformers beside the CPU torch wheel" >&2
  exit 1
fi
