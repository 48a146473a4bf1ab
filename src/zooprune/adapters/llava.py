"""LLaVA-1.5 (``LlavaForConditionalGeneration``, the llava-hf checkpoint layout).

Vision tower -> hidden state ``config.vision_feature_layer`` (CLS dropped under the
"default" select strategy) -> ``model.model.multi_modal_projector`` (token-wise MLP). This
mirrors ``LlavaModel.get_image_features`` in transformers 5.x; the keep-all test checks that
the spliced inputs give the stock logits.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .base import ImageTokens, VLMAdapter


class LlavaAdapter(VLMAdapter):
    model_types = ("llava",)
    model_class = "LlavaForConditionalGeneration"
    provides = frozenset(
        {"features", "projector", "grid", "cls_attention", "keys", "instruction", "llm_layer"}
    )

    def projector(self) -> nn.Module:
        return self.model.model.multi_modal_projector

    def vision_layer_index(self) -> int:
        """Index into the vision tower's ``hidden_states`` that the model reads (0 = embeddings)."""
        layer = self.model.config.vision_feature_layer
        if not isinstance(layer, int):
            layer = layer[-1]
        num_layers = self.model.config.vision_config.num_hidden_layers
        return layer % (num_layers + 1)

    def vision_features(
        self, pixel_values: Tensor, needs: frozenset[str], with_cls: bool = False
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``(I, 3, H, W)`` -> features ``(I, N, d_v)`` at the read layer (CLS dropped under "default"),
        and, if ``needs`` asks, [CLS] attention ``(I, N)`` and keys ``(I, N, H, d_h)`` there; with
        ``with_cls`` a fourth item, the [CLS] hidden states ``(I, d_v)`` at the read layer(s) (None
        unless the attention is asked for)."""
        config = self.model.config
        tower = self.model.model.vision_tower
        want_attention = bool({"cls_attention", "keys"} & needs)
        captured: dict[str, Tensor] = {}
        handles = self._capture_qk(tower, captured) if want_attention else []
        try:
            out = tower(pixel_values.to(self.model.dtype), output_hidden_states=True, return_dict=True)
        finally:
            for h in handles:
                h.remove()
        layers = config.vision_feature_layer
        layers = [layers] if isinstance(layers, int) else list(layers)
        drop_cls = config.vision_feature_select_strategy == "default"
        feats = torch.cat(
            [out.hidden_states[i][:, 1:] if drop_cls else out.hidden_states[i] for i in layers], -1
        )
        heads = self.model.config.vision_config.num_attention_heads
        cls_attn, keys = cls_attention(captured["q"], captured["k"], heads) if want_attention else (None, None)
        if with_cls:
            cls = torch.cat([out.hidden_states[i][:, 0] for i in layers], -1) if want_attention else None
            return feats, cls_attn, keys, cls  # type: ignore[return-value]
        return feats, cls_attn, keys

    def encode(self, pixel_values: Tensor, needs: frozenset[str], **extras: Any) -> list[ImageTokens]:
        """``pixel_values`` ``(I, 3, H, W)`` -> per image ``(N, d_v)`` features, ``(N, d_l)`` tokens."""
        feats, cls_attn, keys, cls = self.vision_features(pixel_values, needs, with_cls=True)
        projected = self.projector()(feats)  # (I, N, d_l)
        n = projected.shape[1]
        side = math.isqrt(n)
        grid = (side, side) if side * side == n else None
        return [
            ImageTokens(
                projected=projected[i],
                features=feats[i],
                grid=grid,
                cls_attention=None if cls_attn is None else cls_attn[i],
                keys=None if keys is None else keys[i],
                cls_feature=None if cls is None else cls[i],
            )
            for i in range(projected.shape[0])
        ]

    def _capture_qk(self, tower: nn.Module, store: dict[str, Tensor]) -> list[Any]:
        """Forward hooks on q/k projections of the encoder layer that produced the read features."""
        index = self.vision_layer_index()
        if index == 0:
            raise ValueError("the model reads the vision embeddings (layer 0): there is no [CLS] attention")
        if self.model.config.vision_feature_select_strategy != "default":
            raise ValueError(
                "this model keeps no [CLS] token (vision_feature_select_strategy="
                f"{self.model.config.vision_feature_select_strategy!r}); methods that need [CLS] attention cannot run"
            )
        attn = getattr(tower, "vision_model", tower).encoder.layers[index - 1].self_attn

        def keep(name: str):
            def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
                store[name] = output.detach()

            return hook

        return [attn.q_proj.register_forward_hook(keep("q")), attn.k_proj.register_forward_hook(keep("k"))]


def cls_attention(q: Tensor, k: Tensor, num_heads: int) -> tuple[Tensor, Tensor]:
    """Head-averaged softmax attention of [CLS] over the patches, and the patches' keys per head.

    Args:
        q, k: ``(I, 1 + N, d)`` query / key projections of the read vision layer ([CLS] first).
        num_heads: attention heads H (``d = H * d_h``).

    Returns:
        ``(I, N)`` float32 attention and ``(I, N, H, d_h)`` float32 keys.
    """
    q, k = q.float(), k.float()
    i, t, d = k.shape
    qh = q.view(i, t, num_heads, d // num_heads).transpose(1, 2)  # (I, H, T, dh)
    kh = k.view(i, t, num_heads, d // num_heads).transpose(1, 2)
    logits = qh[:, :, :1] @ kh.transpose(-1, -2) * (d // num_heads) ** -0.5  # (I, H, 1, T)
    attn = logits.softmax(-1).mean(dim=1)[:, 0]  # (I, T)
    return attn[:, 1:], k.view(i, t, num_heads, d // num_heads)[:, 1:]
