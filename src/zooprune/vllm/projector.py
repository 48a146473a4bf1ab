"""A float32, full-weight, single-device copy of vLLM's LLaVA projector, for scoring.

vLLM's ``LlavaMultiModalProjector`` is ``ColumnParallelLinear -> act -> RowParallelLinear``: under
tensor parallelism each rank holds a slice of ``linear_1``'s rows and of ``linear_2``'s columns.
Scores must not depend on the parallel layout, and the closed-form estimator needs the whole
weights, so the copy gathers the slices (once per model instance; a collective every rank runs
in step, since every rank embeds the same images) and rebuilds ``nn.Sequential(Linear, act,
Linear)`` in float32 with the HF activation (``transformers.activations.ACT2FN``): the function
``zooprune.load(...)`` scores through. Every estimator (closed-form, jvp, central) then sees the
same projector at TP=1 and TP=n, so the kept tokens do not depend on the sharding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


def _full(weight: Tensor, layer: nn.Module, dim: int) -> Tensor:
    """``weight`` gathered along ``dim`` over the layer's tensor-parallel ranks (as is at TP=1)."""
    if getattr(layer, "tp_size", 1) <= 1:
        return weight
    from vllm.distributed import tensor_model_parallel_all_gather

    return tensor_model_parallel_all_gather(weight.contiguous(), dim)


def linear_from(layer: nn.Module, shard_dim: int, bias_sharded: bool) -> nn.Linear:
    """A float32 ``nn.Linear`` with ``layer``'s full weight ``(out, in)`` and bias."""
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, Tensor) or not weight.is_floating_point() or weight.dim() != 2:
        raise ValueError(
            f"zooprune scores through the projector's weights, but {type(layer).__name__} holds no "
            "2-D floating-point weight (quantized, or repacked by the backend after loading: the copy "
            "is made in load_weights)"
        )
    w = _full(weight.detach(), layer, shard_dim).float()
    bias = getattr(layer, "bias", None)
    lin = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None, device=w.device, dtype=torch.float32)
    with torch.no_grad():
        lin.weight.copy_(w)
        if bias is not None:
            lin.bias.copy_((_full(bias.detach(), layer, 0) if bias_sharded else bias.detach()).float())
    return lin.requires_grad_(False)


def float32_llava_projector(projector: nn.Module, config: Any) -> nn.Sequential:
    """``nn.Sequential(Linear(d_v, h), act, Linear(h, d_l))`` in float32 from vLLM's projector.

    Args:
        projector: vLLM's ``LlavaMultiModalProjector`` (``linear_1`` column-, ``linear_2`` row-parallel).
        config: the model's ``LlavaConfig`` (``projector_hidden_act``).
    """
    from transformers.activations import ACT2FN

    first = linear_from(projector.linear_1, shard_dim=0, bias_sharded=True)  # column-parallel: rows
    second = linear_from(projector.linear_2, shard_dim=1, bias_sharded=False)  # row-parallel: columns
    return nn.Sequential(first, ACT2FN[config.projector_hidden_act], second).eval()
