"""In-LLM pruning (FastV, DART, PyramidDrop, SparseVLM): visual tokens dropped at one or more LLM layers.

One mechanism for every in-LLM method and every Llama-style language model (Llama, Mistral,
Qwen2): forward pre-hooks on *this model instance's* decoder layers, installed only while a
``generate`` / ``forward`` call runs. A method prunes in stages at layers ``K_1 < ... < K_S``
(``InLLMStages.stage_layers``; FastV / DART: one stage at K). During prefill, the hook on layer
``K_s`` reads layer ``K_s - 1``'s state (output hidden states, post-RoPE keys from the cache, the
last prompt token's attention, and whatever else the options' ``llm_fields`` ask for), asks the
method which of the visual tokens still present to keep, and gathers hidden states, mask and
rotary embeddings to those positions; the layers up to the next stage get the same gather.
Positions keep their original values (as FastV's ``position_ids = keep_indexs``). During
decoding, the layers of stage s see a key mask restricted to the positions stage s kept, matching
their shorter KV cache, while layers < K_1 keep every token's keys (exactly the staged computation
with a KV cache: cached decoding equals re-running the staged forward from scratch).

Ragged batches (rows keeping different numbers of tokens at a stage: different image counts, token
counts or budgets): each row's kept positions are left-padded to the longest row with copies of its
first slot (``Stage.filler``), and those slots are hidden as keys from every query, at prefill and in
every decoding step, by the 4-D attention mask (bool for SDPA, additive for eager; built when the model
passed none). Real tokens then see exactly what they see alone: batch == one by one. An attention
implementation without 4-D masks (flash attention) raises for such a batch.

Per-step re-selection (``Method.reference_per_step`` under ``fidelity="reference"``: FastV's reference,
which generates without a KV cache): a forward pre-hook on the language model turns every decoding
step into a prefill of the whole sequence (prompt + the tokens generated so far, with a fresh cache),
so the stages are decided again at every step from that step's last token; nothing selected or cached
is reused between steps (slow by design: T new tokens cost T prefills). ``InLLMPlan.steps`` holds
every step's kept indices; the reports hold the first step's (the prompt's).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from ..config import PruneConfig, resolve_budget
from ..methods import Method, PruneContext, Selection
from ..methods.options import DEFAULT_LAYER, InLLMStages
from ..report import PruneReport
from ..timing import timed
from .in_llm_tensors import ImageSlot, check_stage_selection, last_token_attention, take_rows

__all__ = ["DEFAULT_LAYER", "InLLMPlan", "Stage"]

#: Optional context fields the plan can compute (``InLLMStages.llm_fields``).
OPTIONAL_FIELDS = frozenset(
    {"llm_next_attention", "llm_text_attention", "llm_residual", "llm_image_embeds", "instruction"}
)


@dataclass
class Stage:
    """One pruning stage, decided at prefill.

    Attributes:
        layer: ``K_s``, the first decoder layer that sees only this stage's tokens.
        keep: ``(B, L_s)`` positions of the full sequence kept from ``K_s`` on (sorted).
        local: ``(B, L_s)`` their indices in the previous stage's sequence (the gather at ``K_s``).
        tokens: ``(row, index into the L_s kept, (M, d) hidden states)`` written over the gathered
            hidden states at ``K_s`` (methods that merge, e.g. SparseVLM's recycled tokens).
        filler: ``(B, L_s)`` True at padding slots, or None when every row kept the same count. A ragged
            batch (rows keeping different numbers of tokens) is left-padded to the longest row with copies
            of the row's first token, hidden as keys from every query by the attention mask.
    """

    layer: int
    keep: Tensor
    local: Tensor
    tokens: list[tuple[int, Tensor, Tensor]] = field(default_factory=list)
    filler: Tensor | None = None


@dataclass
class InLLMPlan:
    """Hooks that prune visual tokens inside the language model for one batch.

    Attributes:
        stages: the decided stages, in order (filled at prefill).
        steps: per-step re-selection only (:attr:`per_step`): for each generation step, each image's
            kept indices (into its N) after the last stage.
    """

    method: Method
    config: PruneConfig
    language_model: nn.Module
    slots: list[ImageSlot]
    reports: list[PruneReport]
    attention_mask: Tensor
    stages: list[Stage] = field(default_factory=list)
    full_length: int = 0
    steps: list[list[Tensor]] = field(default_factory=list)
    _captured: dict[Any, Any] = field(default_factory=dict)

    @property
    def options(self) -> InLLMStages:
        options = self.config.options
        if not isinstance(options, InLLMStages):
            raise TypeError(f"in-LLM method {self.method.name!r} needs InLLMStages options, got {type(options).__name__}")
        return options

    @property
    def per_step(self) -> bool:
        """Re-select at every decoding step over the whole sequence, no KV cache reused (the method's
        reference under ``fidelity="reference"``, ``Method.reference_per_step``)."""
        return self.config.fidelity == "reference" and self.config.spec.reference_per_step

    @property
    def layers(self) -> tuple[int, ...]:
        """``(K_1, ..., K_S)``, checked against this language model's depth."""
        total = len(self.language_model.layers)
        ks = tuple(int(k) for k in self.options.stage_layers(total))
        for k in ks:
            if not 1 <= k < total:
                raise ValueError(f"in-LLM pruning layer must be in [1, {total - 1}] for this model, got {k}")
        if not ks or any(b <= a for a, b in zip(ks, ks[1:])):
            raise ValueError(f"in-LLM pruning layers must be strictly increasing, got {list(ks)}")
        return ks

    @property
    def keep(self) -> Tensor | None:
        """``(B, L_kept)`` positions of the full sequence kept after the last stage (None before prefill)."""
        return self.stages[-1].keep if self.stages else None

    # ---- hooks --------------------------------------------------------------------------
    @contextmanager
    def active(self) -> Iterator[InLLMPlan]:
        """Install the hooks on this model instance for the duration of the block."""
        layers = self.language_model.layers
        ks = self.layers
        self._captured["layers"] = ks
        fields = self.options.llm_fields
        unknown = fields - OPTIONAL_FIELDS
        if unknown:
            raise ValueError(f"unknown llm_fields {sorted(unknown)}; choose from {sorted(OPTIONAL_FIELDS)}")
        readers = [layers[k - 1].self_attn for k in ks]
        if "llm_next_attention" in fields:
            readers += [layers[k].self_attn for k in ks]
        for attn in readers:
            if hasattr(attn, "q_norm"):
                raise ValueError(
                    f"in-LLM methods do not support attention with q/k norms ({type(attn).__name__})"
                )
        handles = []
        if self.per_step:
            handles.append(self.language_model.register_forward_pre_hook(self._whole_sequence, with_kwargs=True))
        if fields & {"llm_image_embeds", "instruction"}:
            handles.append(layers[0].register_forward_pre_hook(self._remember_input, with_kwargs=True))
        handles += [
            layers[i].register_forward_pre_hook(partial(self._gather, i), with_kwargs=True)
            for i in range(ks[0], len(layers))
        ]  # before the state hooks below: layer K_s - 1 of a later stage is read after its own gather
        for k in ks:
            handles.append(layers[k - 1].register_forward_pre_hook(partial(self._remember_rotary, k), with_kwargs=True))
            handles.append(layers[k - 1].self_attn.q_proj.register_forward_hook(partial(self._remember_queries, k)))
        prompt_mask = self.attention_mask  # per-step re-selection extends it while generating
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
            self._captured.clear()
            self.attention_mask = prompt_mask

    def _whole_sequence(self, _m: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        """Per-step re-selection: a decoding step's one new token becomes a prefill of the whole sequence.

        The prompt's ``inputs_embeds`` ``(B, L, d)`` and ``position_ids`` are remembered at prefill; each
        step appends its new ones and runs all of them again with a fresh cache (``cache=None``,
        ``use_cache=True``: the language model builds an empty one, which the stage decision reads);
        the 2-D ``attention_mask`` that ``generate`` extends already covers the whole sequence.
        """
        embeds = kwargs.get("inputs_embeds")
        if args or embeds is None:
            raise RuntimeError("per-step in-LLM re-selection needs the language model called with inputs_embeds=")
        positions = kwargs.get("position_ids")
        seen = self._captured.get("sequence")
        if seen is None or embeds.shape[1] > 1:  # prefill: the prompt
            self._captured["sequence"] = (embeds, positions)
        else:
            embeds = torch.cat([seen[0], embeds], dim=1)  # (B, L + t, d)
            if isinstance(positions, Tensor) and isinstance(seen[1], Tensor):
                positions = torch.cat([seen[1], positions], dim=-1)
            self._captured["sequence"] = (embeds, positions)
            kwargs = {**kwargs, "inputs_embeds": embeds, "position_ids": positions, "use_cache": True}
            for key in ("cache", "past_key_values"):
                if key in kwargs:
                    kwargs[key] = None
        mask = kwargs.get("attention_mask")
        if isinstance(mask, Tensor) and mask.dim() == 2 and mask.shape[1] == embeds.shape[1]:
            self.attention_mask = mask
        else:  # no 2-D mask given: the generated tokens are all valid
            extra = embeds.shape[1] - self.attention_mask.shape[1]
            self.attention_mask = torch.cat([self.attention_mask, self.attention_mask.new_ones(embeds.shape[0], extra)], 1)
        self.stages = []  # decided again at this step
        return args, kwargs

    def _remember_input(self, _m: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        hidden = self._hidden(args, kwargs)
        if hidden.shape[1] > 1:
            self._captured["embeds"] = hidden.detach()

    def _remember_rotary(self, k: int, _m: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if self._hidden(args, kwargs).shape[1] > 1:
            self._captured[k, "rotary"] = kwargs.get("position_embeddings")
            self._captured[k, "cache"] = kwargs.get("cache", kwargs.get("past_key_values"))

    def _remember_queries(self, k: int, _m: nn.Module, _inputs: Any, output: Tensor) -> None:
        if output.shape[1] > 1:
            self._captured[k, "q_last"] = output[:, -1].detach()  # (B, H * d_h)
            if "llm_text_attention" in self.options.llm_fields:
                self._captured[k, "q_all"] = output.detach()  # (B, L_cur, H * d_h)

    @staticmethod
    def _hidden(args: tuple, kwargs: dict[str, Any]) -> Tensor:
        return args[0] if args else kwargs["hidden_states"]

    def _gather(
        self, index: int, module: nn.Module, args: tuple, kwargs: dict[str, Any]
    ) -> tuple[tuple, dict[str, Any]]:
        hidden = self._hidden(args, kwargs)
        prefill = hidden.shape[1] > 1
        ks = self._captured["layers"]
        current = max(s for s, k in enumerate(ks) if k <= index)  # the stage this layer belongs to
        if prefill and index == ks[current] and len(self.stages) == current:  # prefill at K_s: decide
            if current == 0:
                self.full_length = hidden.shape[1]
            self.stages.append(self._select(current, module, hidden, kwargs))
        if len(self.stages) <= current:
            return args, kwargs
        stage = self.stages[current]
        keep = stage.keep
        if prefill and index == stage.layer:  # K_s at prefill: prune the hidden states
            hidden = hidden.gather(1, stage.local[:, :, None].expand(-1, -1, hidden.shape[-1]))
            if stage.tokens:
                hidden = hidden.clone()
                for row, where, values in stage.tokens:
                    hidden[row, where] = values.to(hidden.dtype)
            args, kwargs = self._replace_hidden(args, kwargs, hidden)
        mask = kwargs.get("attention_mask")
        if prefill:  # queries and keys are the kept positions
            if isinstance(mask, Tensor):
                mask = take_rows(take_rows(mask, 2, keep), 3, keep)
            mask = self._hide_fillers(mask, stage.filler, query_length=keep.shape[1])
            rotary = kwargs.get("position_embeddings")
            if rotary is not None:
                kwargs["position_embeddings"] = tuple(take_rows(r, 1, keep) for r in rotary)
            if isinstance(kwargs.get("position_ids"), Tensor):
                kwargs["position_ids"] = take_rows(kwargs["position_ids"], 1, keep)
        elif isinstance(mask, Tensor) and mask.shape[-1] > keep.shape[1]:  # decode: kept keys + new ones
            new = torch.arange(self.full_length, mask.shape[-1], device=keep.device).expand(keep.shape[0], -1)
            mask = take_rows(mask, 3, torch.cat([keep, new], dim=1))
        if not prefill and stage.filler is not None:  # decode: the cache's padding slots stay hidden
            if isinstance(mask, Tensor):
                total = mask.shape[-1]
            else:  # no mask (no padding): the layer's cache + this step's keys
                cache = kwargs.get("cache", kwargs.get("past_key_values"))
                total = cache.layers[index].keys.shape[-2] + hidden.shape[1]
            mask = self._hide_fillers(mask, stage.filler, query_length=hidden.shape[1], key_length=total)
        kwargs["attention_mask"] = mask
        return args, kwargs

    def _hide_fillers(
        self, mask: Any, filler: Tensor | None, query_length: int, key_length: int | None = None
    ) -> Any:
        """``mask`` (4-D bool, 4-D additive float, or None) with the ragged-batch padding slots ``filler``
        ``(B, L_s)`` (the first L_s keys) hidden from every query. A None mask (no padding: causal
        attention) becomes a bool one, causal over the gathered, sorted positions (SDPA / eager)."""
        if filler is None:
            return mask
        key_length = key_length or filler.shape[1]
        hidden_keys = torch.zeros(filler.shape[0], key_length, dtype=torch.bool, device=filler.device)
        hidden_keys[:, : filler.shape[1]] = filler
        if mask is None:
            implementation = getattr(self.language_model.config, "_attn_implementation", "sdpa")
            if implementation not in ("sdpa", "eager"):
                raise self._ragged_error(f"the {implementation} attention implementation takes no 4-D mask")
            causal = torch.ones(query_length, key_length, dtype=torch.bool, device=filler.device).tril(
                key_length - query_length
            )
            allowed = causal[None, None] & ~hidden_keys[:, None, None, :]
            if implementation == "eager":
                dtype = next(self.language_model.parameters()).dtype
                zeros = torch.zeros(allowed.shape, dtype=dtype, device=filler.device)
                return zeros.masked_fill(~allowed, torch.finfo(dtype).min)
            return allowed
        if not isinstance(mask, Tensor) or mask.dim() != 4:
            raise self._ragged_error("the attention mask is not a 4-D tensor (e.g. flash attention)")
        if mask.dtype == torch.bool:
            return mask & ~hidden_keys[:, None, None, :]
        return mask.masked_fill(hidden_keys[:, None, None, :], torch.finfo(mask.dtype).min)

    def _ragged_error(self, reason: str) -> ValueError:
        return ValueError(
            f"in-LLM method {self.method.name!r}: the prompts of this batch keep different numbers of visual "
            f"tokens, which needs the padding slots hidden by a 4-D attention mask, and {reason}; use "
            "attn_implementation='sdpa' or 'eager', or run the prompts one by one"
        )

    @staticmethod
    def _replace_hidden(args: tuple, kwargs: dict[str, Any], hidden: Tensor) -> tuple[tuple, dict[str, Any]]:
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    # ---- the decision -------------------------------------------------------------------
    def _select(self, stage: int, module: nn.Module, hidden: Tensor, kwargs: dict[str, Any]) -> Stage:
        """Run the method on each image with layer ``K_s - 1``'s state; the stage's kept positions."""
        ks = self._captured["layers"]
        k_layer, fields = ks[stage], self.options.llm_fields
        bsz, length = hidden.shape[:2]
        device = hidden.device
        prev = self.stages[-1].keep if stage else torch.arange(length, device=device).expand(bsz, -1)
        old_filler = self.stages[-1].filler if stage else None
        state = self._layer_state(k_layer, hidden, prev, old_filler)
        if "llm_next_attention" in fields:
            state["next_attention"] = self._next_attention(module, hidden, prev, state["valid"], kwargs)
        embeds = self._captured.get("embeds")
        drop = torch.zeros(bsz, length, dtype=torch.bool, device=device)
        if old_filler is not None:
            drop |= old_filler  # the previous stage's padding slots: padded again below if needed
        real = torch.ones(bsz, length, dtype=torch.bool, device=device) if old_filler is None else ~old_filler
        merged: list[tuple[int, Tensor, Tensor]] = []  # (row, local index in prev, values)
        step_kept: list[Tensor] = []
        for slot, report in zip(self.slots, self.reports):
            b, s, n0 = slot.row, slot.start, slot.length
            cur = prev[b]  # (L_cur,) positions of the full sequence
            vis = ((cur >= s) & (cur < s + n0) & real[b]).nonzero().flatten()  # (N,) local indices of the image
            after = ((cur >= s + n0) & real[b]).nonzero().flatten()  # (T,) local indices of the text after it
            n = int(vis.numel())
            optional: dict[str, Any] = {}
            if "llm_next_attention" in fields:
                optional["llm_next_attention"] = state["next_attention"][b, vis]
            if "llm_text_attention" in fields:
                optional["llm_text_attention"] = self._text_attention(k_layer, b, vis, after, state)
            if "llm_residual" in fields:
                optional["llm_residual"] = hidden[b, vis]
            if embeds is not None and "llm_image_embeds" in fields:
                optional["llm_image_embeds"] = embeds[b, s : s + n0]
            if embeds is not None and "instruction" in fields:
                optional["instruction"] = embeds[b, s + n0 :]
            ctx = PruneContext(
                projected=state["hidden"][b, vis],
                llm_attention=state["attention"][b, vis],
                llm_hidden=state["hidden"][b, vis],
                llm_keys=state["keys"][b, vis],
                llm_query_hidden=state["hidden"][b, after],
                llm_query_keys=state["keys"][b, after],
                generator=torch.Generator().manual_seed(self.config.seed),
                options=self.config.options,
                llm_stage=stage,
                llm_prune_layer=k_layer,
                llm_image_start=int(self.attention_mask[b, :s].sum()),  # in the unpadded sequence
                **optional,
            )
            n_image = report.tokens_before  # the image's N (n0 is fewer when the method pruned before the LLM)
            k_final = resolve_budget(self.config.keep, n_image)
            k = min(n, self.options.stage_keep(n_image, k_final, stage, len(ks)) if k_final < n0 else n0)
            with timed(report.timings, "select"):
                sel = Selection(torch.arange(n)) if k >= n else self.method(ctx, k)
            kept = sel.indices.to(device)
            check_stage_selection(self.method.name, kept, n, sel.tokens)
            drop[b, vis] = True
            drop[b, vis[kept]] = False
            if sel.tokens is not None:
                merged.append((b, vis[kept], sel.tokens[: kept.numel()].detach()))
            if stage == 0:
                self._captured["scores", id(report)] = sel.scores
            scores = self._captured.get(("scores", id(report)))
            step_kept.append(cur[vis[kept]].cpu() - s)
            if not self.steps:  # per-step re-selection: the reports hold the first step's (the prompt's)
                report.record_in_llm(step_kept[-1], scores, k_layer, len(self.language_model.layers))
        if self.per_step and stage == len(ks) - 1:
            self.steps.append(step_kept)
        counts = (~drop).sum(dim=1)
        width = int(counts.max())
        rows, fillers = [], []
        for b in range(bsz):  # kept local indices, sorted; shorter rows left-padded with copies of index 0
            kept_b = (~drop[b]).nonzero().flatten()
            pad = width - kept_b.numel()
            rows.append(torch.cat([kept_b.new_zeros(pad), kept_b]))
            fillers.append(torch.arange(width, device=device) < pad)
        local = torch.stack(rows)  # (B, L_kept)
        filler = torch.stack(fillers) if bool((counts != width).any()) else None
        tokens = [
            (row, width - int(counts[row]) + torch.searchsorted(local[row, width - int(counts[row]) :], where), values)
            for row, where, values in merged
        ]
        return Stage(k_layer, prev.gather(1, local), local, tokens, filler)

    def _layer_state(self, k: int, hidden: Tensor, prev: Tensor, filler: Tensor | None = None) -> dict[str, Tensor]:
        """Layer K-1's output (final-normed), its post-RoPE keys, and the last token's attention."""
        attn_module = self.language_model.layers[k - 1].self_attn
        cache = self._captured.get((k, "cache"))
        if cache is None or (k, "q_last") not in self._captured or self._captured.get((k, "rotary")) is None:
            raise RuntimeError("in-LLM pruning needs use_cache=True and rotary embeddings at layer K-1")
        keys = cache.layers[k - 1].keys  # (B, H_kv, L, d_h), post-RoPE
        bsz, heads_kv, length, head_dim = keys.shape
        cos, sin = self._captured[k, "rotary"]  # (B, L, d_h)
        rope = sys.modules[type(attn_module).__module__].apply_rotary_pos_emb
        q = self._captured[k, "q_last"].view(bsz, -1, 1, head_dim)  # (B, H, 1, d_h)
        q, _ = rope(q, q, cos[:, -1:], sin[:, -1:])
        valid = take_rows(self.attention_mask.bool(), 1, prev)  # (B, L) padding gets no attention
        if filler is not None:
            valid = valid & ~filler  # nor a ragged batch's padding slots
        return {
            "attention": last_token_attention(q, keys, valid, self.config.fidelity == "reference"),
            "hidden": self.language_model.norm(hidden).float(),  # (B, L, d)
            "keys": keys.float().permute(0, 2, 1, 3).reshape(bsz, length, heads_kv * head_dim),
            "raw_keys": keys,
            "valid": valid,
        }

    def _next_attention(
        self, layer: nn.Module, hidden: Tensor, prev: Tensor, valid: Tensor, kwargs: dict[str, Any]
    ) -> Tensor:
        """``(B, L)`` head-averaged attention of the last token at layer ``K_s`` itself, on every current token
        (its input norm, q/k projections and RoPE at the current positions; float32 logits)."""
        attn = layer.self_attn
        rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb
        cos, sin = (take_rows(r, 1, prev) for r in kwargs["position_embeddings"])  # (B, L, d_h)
        normed = layer.input_layernorm(hidden)
        bsz, length = hidden.shape[:2]
        head_dim = cos.shape[-1]
        q = attn.q_proj(normed[:, -1:]).view(bsz, 1, -1, head_dim).transpose(1, 2)  # (B, H, 1, d_h)
        k = attn.k_proj(normed).view(bsz, length, -1, head_dim).transpose(1, 2)  # (B, H_kv, L, d_h)
        q, _ = rope(q, q, cos[:, -1:], sin[:, -1:])
        k, _ = rope(k, k, cos, sin)
        groups = q.shape[1] // k.shape[1]
        logits = q.float() @ k.float().repeat_interleave(groups, dim=1).transpose(-1, -2) / math.sqrt(head_dim)
        weights = logits.masked_fill(~valid[:, None, None, :], float("-inf")).softmax(-1)  # (B, H, 1, L)
        return weights.mean(dim=1)[:, 0]

    def _text_attention(self, k: int, row: int, vis: Tensor, after: Tensor, state: dict[str, Tensor]) -> Tensor:
        """``(T, N)`` head-averaged attention at layer K-1 from each text token after the image (causal,
        padding masked) to each visual token ``vis``."""
        keys = state["raw_keys"][row]  # (H_kv, L, d_h)
        heads_kv, length, head_dim = keys.shape
        attn_module = self.language_model.layers[k - 1].self_attn
        rope = sys.modules[type(attn_module).__module__].apply_rotary_pos_emb
        cos, sin = self._captured[k, "rotary"]
        q = self._captured[k, "q_all"][row, after].view(1, after.numel(), -1, head_dim).transpose(1, 2)
        r = row if cos.shape[0] > 1 else 0  # rotary tables may be shared by the batch
        q, _ = rope(q, q, cos[r : r + 1, after], sin[r : r + 1, after])  # (1, H, T, d_h)
        groups = q.shape[1] // heads_kv
        logits = q[0].float() @ keys.float().repeat_interleave(groups, dim=0).transpose(-1, -2) / math.sqrt(head_dim)
        causal = torch.arange(length, device=keys.device)[None, :] <= after[:, None]  # (T, L)
        allowed = causal & state["valid"][row][None, :]
        weights = logits.masked_fill(~allowed[None], float("-inf")).softmax(-1)  # (H, T, L)
        return weights.mean(dim=0)[:, vis]
