"""lmms-eval plugin: evaluate pruned VLMs on lmms-eval's benchmarks without a fork.

Install with ``pip install "zooprune[eval]"`` (or ``scripts/install_lmms_eval.sh``), then::

    python -m lmms_eval --model zooprune \\
        --model_args pretrained=llava-hf/llava-1.5-7b-hf,method=zoo,keep=64,batch_size=8 \\
        --tasks gqa --log_samples --output_path runs/lmms

The model is registered through the ``lmms_eval.models`` entry point; the older
``LMMS_EVAL_PLUGINS=zooprune.lmms_eval`` route of lmms-eval works too. See docs/lmms-eval.md.
Only ``models/zooprune.py`` imports lmms-eval; the rest of this package works without it.
"""

from .accounting import RequestTokens, RunLedger
from .args import PluginArgs, parse_model_args
from .batching import make_batches, restore_order

__all__ = ["PluginArgs", "RequestTokens", "RunLedger", "make_batches", "parse_model_args", "restore_order"]
