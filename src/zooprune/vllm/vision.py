"""vLLM's LLaVA vision tower -> pre-projector features, and [CLS] attention when a method needs it.

vLLM builds the CLIP tower only up to the layer the model reads (``vision_feature_layer``) and
fuses each layer's q/k/v projections into one ``qkv_proj`` (sharded by heads under tensor
parallelism). The features are the stock ``_image_pixels_to_features`` output; for [CLS]
attention and keys a forward hook on the last built layer's ``qkv_proj`` (this model instance
only, removed after the call) captures q and k, gathered over tensor-parallel ranks, and
the HF adapter's :func:`~zooprune.adapters.llava.cls_attention` computes the attention from them.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..adapters.llava import cls_attention

#: ``PruneContext`` needs that require the vision attention capture.
ATTENTION_NEEDS = frozenset({"cls_attention", "keys"})


def read_attention_layer(model: Any) -> nn.Module:
    """The self-attention module of the vision layer whose output the model reads (clear errors)."""
    config = model.config
    if config.vision_feature_select_strategy != "default":
        raise ValueError(
            "this model keeps no [CLS] token (vision_feature_select_strategy="
            f"{config.vision_feature_select_strategy!r}); methods that need [CLS] attention cannot run"
        )
    if not isinstance(config.vision_feature_layer, int):
        raise ValueError("methods that need [CLS] attention need a single vision_feature_layer")
    layers = model.vision_tower.vision_model.encoder.layers
    if len(layers) == 0:
        raise ValueError("the model reads the vision embeddings (layer 0): there is no [CLS] attention")
    if getattr(config.vision_config, "model_type", "") != "clip_vision_model":
        raise ValueError(
            f"methods that need [CLS] attention need a CLIP tower, got {config.vision_config.model_type!r}"
        )
    return layers[-1].self_attn


def tower_features(model: Any, pixel_values: Tensor, needs: frozenset[str]) -> dict[str, Tensor | None]:
    """Run ``model``'s vision tower once.

    Args:
        model: vLLM's ``LlavaForConditionalGeneration`` (or a subclass).
        pixel_values: ``(I, 3, H, W)``.
        needs: the union of the methods' ``needs`` over the images.
    Returns:
        ``features`` ``(I, N, d_v)`` (model dtype, [CLS] dropped under "default"), and
        ``cls_attention`` ``(I, N)`` / ``keys`` ``(I, N, H, d_h)`` (float32) or None.
    """
    out: dict[str, Tensor | None] = {"cls_attention": None, "keys": None}
    if not ATTENTION_NEEDS & needs:
        out["features"] = model._image_pixels_to_features(model.vision_tower, pixel_values)
        return out
    attn = read_attention_layer(model)
    captured: dict[str, Tensor] = {}

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        captured["qkv"] = (output[0] if isinstance(output, tuple) else output).detach()

    handle = attn.qkv_proj.register_forward_hook(hook)
    try:
        out["features"] = model._image_pixels_to_features(model.vision_tower, pixel_values)
    finally:
        handle.remove()
    q, k, _v = captured["qkv"].chunk(3, dim=-1)  # each (I, T, d / tp): this rank's heads
    if getattr(attn, "tp_size", 1) > 1:
        from vllm.distributed import tensor_model_parallel_all_gather

        q, k = tensor_model_parallel_all_gather(q.contiguous(), -1), tensor_model_parallel_all_gather(k.contiguous(), -1)
    out["cls_attention"], out["keys"] = cls_attention(q, k, model.config.vision_config.num_attention_heads)
    return out
