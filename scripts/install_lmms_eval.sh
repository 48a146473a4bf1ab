#!/usr/bin/env bash
# Install lmms-eval for the zooprune plugin into the active environment without letting
# torchvision in (docs/lmms-eval.md). lmms_eval's metadata requires torchvision, and pip's
# torchvision wheel needs a matching torch and breaks transformers beside the CPU torch wheel;
# so: the package with its [eval] extra (lmms-eval's runtime needs), then lmms_eval itself with
# --no-deps, then a check that lmms-eval starts and finds the zooprune model.
#
# Usage: bash scripts/install_lmms_eval.sh [PACKAGE_SPEC]   (default: -e <repo root>)
# On GPU machines with a matching torch/torchvision pair, lmms-eval's full dependency set may be
# wanted instead (docs/lmms-eval.md); this script is the minimal path, and the one CI uses.
set -euo pipefail
LMMS_EVAL_VERSION="0.7.3"
root="$(cd "$(dirname "$0")/.." && pwd)"

if [ "$#" -gt 0 ]; then
  python -m pip install -q "$1[eval]"
else
  python -m pip install -q -e "${root}[eval]"
fi
python -m pip install -q --no-deps "lmms_eval==${LMMS_EVAL_VERSION}"
# This script never installs torchvision; one already there stays only if it works with this
# torch (a matching GPU pair); a mismatched one breaks transformers and is removed.
if python -m pip show -q torchvision 2>/dev/null && ! python -c "import torchvision" 2>/dev/null; then
  echo "removing torchvision: it does not import beside this torch and would break transformers" >&2
  python -m pip uninstall -q -y torchvision
fi
python - <<'PY'
import lmms_eval.__main__  # noqa: F401  (fails on a missing runtime dependency)
from lmms_eval.models import get_model

print("lmms-eval ready; model 'zooprune' ->", get_model("zooprune").__name__)
PY
