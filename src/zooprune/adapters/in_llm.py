"""In-LLM pruning (FastV, DART): all tokens through layers 0..K-1, only kept ones from layer K on.

One mechanism for every in-LLM method and every Llama-style language model (Llama, Mistral,
Qwen2): forward pre-hooks on *this model instance's* decoder layers, installed only while a
``generate`` / ``forward`` call runs. During prefill, the hook on layer K reads layer K-1's
state (output hidden states, post-RoPE keys from the cache, the last prompt token's attention),
asks the method which visual tokens to keep, and gathers hidden states, mask and rotary
embeddings to those positions; layers after K get the same gather. Positions keep their
original values (as FastV's ``position_ids = keep_indexs``). During decoding, layers >= K see a
key mask restricted to the kept positions, matching their shorter KV cache, while layers < K
keep every token's keys (exactly the FastV/DART computation with a KV cache).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..config import PruneConfig, resolve_budget
from ..methods import Method, PruneContext, Selection
from ..methods.options import DEFAULT_LAYER
from ..report import PruneReport
from ..timing import timed

__all__ = ["DEFAULT_LAYER", "ImageSlot", "InLLMPlan", "image_slots"]


@dataclass
class ImageSlot:
    """Where one image's N visual tokens sit in the (left-padded) full sequence."""

    row: int
    start: int
    length: int


@dataclass
class InLLMPlan:
    """Hooks that prune visual tokens inside the language model for one batch.

    Attributes:
        keep: ``(B, L_kept)`` positions of the full sequence kept from layer K on (set at prefill).
    """

    method: Method
    config: PruneConfig
    language_model: nn.Module
    slots: list[ImageSlot]
    reports: list[PruneReport]
    attention_mask: Tensor
    keep: Tensor | None = None
    full_length: int = 0
    _captured: dict[str, Any] = field(default_factory=dict)

    @property
    def layer(self) -> int:
        k = self.config.options.layer
        total = len(self.language_model.layers)
        if not 1 <= k < total:
            raise ValueError(f"in-LLM pruning layer must be in [1, {total - 1}] for this model, got {k}")
        return k

    # ---- hooks --------------------------------------------------------------------------
    @contextmanager
    def active(self) -> Iterator[InLLMPlan]:
        """Install the hooks on this model instance for the duration of the block."""
        layers = self.language_model.layers
        k = self.layer
        attn = layers[k - 1].self_attn
        if hasattr(attn, "q_norm"):
            raise ValueError(
                f"in-LLM methods do not support attention with q/k norms ({type(attn).__name__})"
            )
        handles = [
            layers[k - 1].register_forward_pre_hook(self._remember_rotary, with_kwargs=True),
            attn.q_proj.register_forward_hook(self._remember_queries),
        ]
        handles += [
            layers[i].register_forward_pre_hook(self._gather, with_kwargs=True) for i in range(k, len(layers))
        ]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
            self._captured.clear()

    def _remember_rotary(self, _m: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if self._hidden(args, kwargs).shape[1] > 1:
            self._captured["rotary"] = kwargs.get("position_embeddings")
            self._captured["cache"] = kwargs.get("cache", kwargs.get("past_key_values"))

    def _remember_queries(self, _m: nn.Module, _inputs: Any, output: Tensor) -> None:
        if output.shape[1] > 1:
            self._captured["q_last"] = output[:, -1].detach()  # (B, H * d_h)

    @staticmethod
    def _hidden(args: tuple, kwargs: dict[str, Any]) -> Tensor:
        return args[0] if args else kwargs["hidden_states"]

    def _gather(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        hidden = self._hidden(args, kwargs)
        if hidden.shape[1] > 1 and self.keep is None:  # prefill at layer K: decide
            self.full_length = hidden.shape[1]
            self.keep = self._select(hidden)
        if self.keep is None:
            return args, kwargs
        keep = self.keep
        if hidden.shape[1] == self.full_length:  # layer K at prefill: prune the hidden states
            hidden = hidden.gather(1, keep[:, :, None].expand(-1, -1, hidden.shape[-1]))
            args, kwargs = self._replace_hidden(args, kwargs, hidden)
        mask = kwargs.get("attention_mask")
        if hidden.shape[1] > 1:  # prefill: queries and keys are the kept positions
            if isinstance(mask, Tensor):
                mask = _take(_take(mask, 2, keep), 3, keep)
            rotary = kwargs.get("position_embeddings")
            if rotary is not None:
                kwargs["position_embeddings"] = tuple(_take(r, 1, keep) for r in rotary)
            if isinstance(kwargs.get("position_ids"), Tensor):
                kwargs["position_ids"] = _take(kwargs["position_ids"], 1, keep)
        elif isinstance(mask, Tensor) and mask.shape[-1] > keep.shape[1]:  # decode: kept keys + new ones
            new = torch.arange(self.full_length, mask.shape[-1], device=keep.device).expand(keep.shape[0], -1)
            mask = _take(mask, 3, torch.cat([keep, new], dim=1))
        kwargs["attention_mask"] = mask
        return args, kwargs

    @staticmethod
    def _replace_hidden(args: tuple, kwargs: dict[str, Any], hidden: Tensor) -> tuple[tuple, dict[str, Any]]:
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    # ---- the decision -------------------------------------------------------------------
    def _select(self, hidden: Tensor) -> Tensor:
        """Run the method on each image with layer K-1's state; ``(B, L_kept)`` kept positions."""
        state = self._layer_state(hidden)
        bsz, length = hidden.shape[:2]
        drop = torch.zeros(bsz, length, dtype=torch.bool, device=hidden.device)
        for slot, report in zip(self.slots, self.reports):
            b, s, n = slot.row, slot.start, slot.length
            after = slice(s + n, length)
            ctx = PruneContext(
                projected=state["hidden"][b, s : s + n],
                llm_attention=state["attention"][b, s : s + n],
                llm_hidden=state["hidden"][b, s : s + n],
                llm_keys=state["keys"][b, s : s + n],
                llm_query_hidden=state["hidden"][b, after],
                llm_query_keys=state["keys"][b, after],
                generator=torch.Generator().manual_seed(self.config.seed),
                options=self.config.options,
            )
            k = resolve_budget(self.config.keep, n)
            with timed(report.timings, "select"):
                sel = Selection(torch.arange(n)) if k >= n else self.method(ctx, k)
            kept = sel.indices.to(hidden.device)
            drop[b, s : s + n] = True
            drop[b, s + kept] = False
            report.record_in_llm(sel.indices, sel.scores, self.layer, len(self.language_model.layers))
        counts = (~drop).sum(dim=1)
        if not bool((counts == counts[0]).all()):
            raise ValueError(
                "in-LLM methods need the same number of kept tokens in every prompt of a batch "
                f"(got {counts.tolist()}); run prompts with different image counts separately"
            )
        positions = torch.arange(length, device=hidden.device).expand(bsz, -1)
        return positions[~drop].view(bsz, -1)  # (B, L_kept), sorted

    def _layer_state(self, hidden: Tensor) -> dict[str, Tensor]:
        """Layer K-1's output (final-normed), its post-RoPE keys, and the last token's attention."""
        k = self.layer
        attn_module = self.language_model.layers[k - 1].self_attn
        cache = self._captured.get("cache")
        if cache is None or "q_last" not in self._captured or self._captured.get("rotary") is None:
            raise RuntimeError("in-LLM pruning needs use_cache=True and rotary embeddings at layer K-1")
        keys = cache.layers[k - 1].keys  # (B, H_kv, L, d_h), post-RoPE
        bsz, heads_kv, length, head_dim = keys.shape
        cos, sin = self._captured["rotary"]  # (B, L, d_h)
        rope = sys.modules[type(attn_module).__module__].apply_rotary_pos_emb
        q = self._captured["q_last"].view(bsz, -1, 1, head_dim)  # (B, H, 1, d_h)
        q, _ = rope(q, q, cos[:, -1:], sin[:, -1:])
        groups = q.shape[1] // heads_kv
        logits = (
            q.float() @ keys.float().repeat_interleave(groups, dim=1).transpose(-1, -2) / math.sqrt(head_dim)
        )
        valid = self.attention_mask.bool()[:, None, None, :length]  # padding gets no attention
        weights = logits.masked_fill(~valid, float("-inf")).softmax(-1)  # (B, H, 1, L)
        return {
            "attention": weights.mean(dim=1)[:, 0],  # (B, L) heads averaged, from the last token
            "hidden": self.language_model.norm(hidden).float(),  # (B, L, d)
            "keys": keys.float().permute(0, 2, 1, 3).reshape(bsz, length, heads_kv * head_dim),
        }


def _take(x: Tensor, dim: int, index: Tensor) -> Tensor:
    """Gather ``x`` along ``dim`` with a per-row ``(B, M)`` index (broadcast over other dims)."""
    shape = [1] * x.dim()
    shape[0], shape[dim] = index.shape[0], index.shape[1]
    idx = index.view(shape).expand(*[x.shape[d] if d not in (0, dim) else shape[d] for d in range(x.dim())])
    if x.shape[0] == 1 and index.shape[0] > 1:
        x = x.expand(index.shape[0], *x.shape[1:])
    return x.gather(dim, idx)


def image_slots(input_ids: Tensor, image_token_id: int, tokens_per_image: list[int]) -> list[ImageSlot]:
    """Each image's contiguous run of placeholders in ``input_ids`` ``(B, L)``, in image order."""
    slots, image = [], 0
    for row in range(input_ids.shape[0]):
        positions = (input_ids[row] == image_token_id).nonzero().flatten().tolist()
        used = 0
        while used < len(positions):
            n = tokens_per_image[image]
            slots.append(ImageSlot(row, positions[used], n))
            used, image = used + n, image + 1
    return slots
