#!/usr/bin/env bash
# Install lmms-eval for the zooprune plugin into the active environment without letting
# torchvision in (docs/lmms-eval.md). lmms_eval's metadata requires torchvision, and pip's
# torchvision wheel needs a matching torch and breaks transformers beside the CPU torch wheel;
# so: the package with its [eval] extra (lmms-eval's runtime needs), then lmms_eval itself with
# --no-deps, then a check that lmms-eval starts and torchvision is absent.
#
# Usage: bash scripts/install_lmms_eval.sh [PACKAGE_SPEC]   (default: -e <repo root>)
# Where torch and torchvision are installed as a matching pair (GPU machines), plain
# `pip install lmms_eval==0.7.3` also works; this script is the path CI uses.
set -euo pipefail
LMMS_EVAL_VERSION="0.7.3"
root="$(cd "$(dirname "$0")/.." && pwd)"

if [ "$#" -gt 0 ]; then
  python -m pip install -q "$1[eval]"
else
  python -m pip install -q -e "${root}[eval]"
fi
python -m pip install -q --no-deps "lmms_eval==${LMMS_EVAL_VERSION}"
if python -m pip show -q torchvision 2>/dev/null; then
  echo "removing torchvision (it breaks transformers beside this torch)" >&2
  python -m pip uninstall -q -y torchvision
fi
python - <<'PY'
import importlib.util

import lmms_eval.__main__  # noqa: F401  (fails on a missing runtime dependency)
from lmms_eval.models import get_model

assert importlib.util.find_spec("torchvision") is None, "torchvision is installed"
print("lmms-eval ready; model 'zooprune' ->", get_model("zooprune").__name__)
PY
