"""zooprune: training-free visual-token pruning (ZOO-Prune and baselines) for Hugging Face VLMs.

Public API::

    vlm = zooprune.load(path, method="zoo", keep=64, seed=0)
    result = vlm.generate(images=[img], prompts=["What is in the box?"])

    with zooprune.pruned(hf_model, method="divprune", keep=0.111):
        hf_model.generate(**processor(images=img, text=prompt, return_tensors="pt"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import PruneConfig
from .methods import list_methods

if TYPE_CHECKING:
    from .attach import PruneHandle
    from .vlm import PrunedVLM

__version__ = "0.1.0"


def load(*args: Any, **kwargs: Any) -> PrunedVLM:
    """See :func:`zooprune.vlm.load` (imported lazily to keep ``import zooprune`` fast)."""
    from .vlm import load as _load

    return _load(*args, **kwargs)


def pruned(*args: Any, **kwargs: Any) -> PruneHandle:
    """See :func:`zooprune.attach.pruned`."""
    from .attach import pruned as _pruned

    return _pruned(*args, **kwargs)


def list_model_types() -> list[str]:
    """``config.model_type`` values with an adapter."""
    from .adapters import list_model_types as _list

    return _list()


__all__ = ["PruneConfig", "__version__", "list_methods", "list_model_types", "load", "pruned"]
