"""Read the kept tokens back out of a running vLLM engine.

The model keeps its recent selections (``ZooLlavaForConditionalGeneration.zooprune_reports``); vLLM
runs the model in worker processes, so read them with ``LLM.apply_model``, which pickles the
function by reference (a module-level function, like these)::

    from zooprune.vllm.reports import take_reports
    reports = llm.apply_model(take_reports)[0]     # one list per worker (tensor-parallel rank)
    reports[0]["kept_indices"], reports[0]["tokens_after"]

(``LLM.apply_model`` needs ``VLLM_ALLOW_INSECURE_SERIALIZATION=1`` in vLLM 0.32: a vLLM setting.)
"""

from __future__ import annotations

from typing import Any


def take_reports(model: Any) -> list[dict[str, Any]]:
    """The model's recorded selections since the last call, oldest first (``PruneReport.to_dict``),
    and forget them. Images that went through vLLM's stock path (nothing to prune) leave no report."""
    reports = getattr(model, "zooprune_reports", None)
    if reports is None:
        return []
    out = [r.to_dict() for r in reports]
    reports.clear()
    return out
