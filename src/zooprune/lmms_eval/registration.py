"""Entry point for lmms-eval's model registry (group ``lmms_eval.models`` in pyproject.toml)."""

from __future__ import annotations

from typing import Any

#: where lmms-eval finds the model class (``module.Class``).
MODEL_CLASS_PATH = "zooprune.lmms_eval.models.zooprune.ZooPrune"


def manifests() -> list[Any]:
    """lmms-eval model manifests for this package: the ``zooprune`` model.

    Called by lmms-eval while it builds its registry, so it imports only the manifest type.
    """
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id="zooprune", simple_class_path=MODEL_CLASS_PATH)]
