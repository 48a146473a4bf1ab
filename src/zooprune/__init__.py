"""zooprune: training-free visual-token pruning (ZOO-Prune and baselines) for HF VLMs."""

from __future__ import annotations

from .config import PruneConfig
from .methods import list_methods

__version__ = "0.1.0"

__all__ = ["PruneConfig", "__version__", "list_methods"]
