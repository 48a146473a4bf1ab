"""Answer one batch of lmms-eval requests with a :class:`~zooprune.vlm.PrunedVLM`.

Free of lmms-eval imports: the model class in ``models/zooprune.py`` unpacks lmms-eval's
requests and calls these functions with plain prompts, images and settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from ..pipeline import prepare
from ..vlm import PrunedVLM, generate_pruned
from .accounting import RequestTokens, request_tokens, split_reports
from .batching import truncate_at_stop


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings of one batch, from a task's ``generation_kwargs``."""

    max_new_tokens: int
    until: tuple[str, ...] = ()
    temperature: float = 0.0
    top_p: float | None = None
    num_beams: int = 1

    @classmethod
    def from_task(cls, gen_kwargs: dict[str, Any] | None, default_max_new_tokens: int) -> GenerationSettings:
        """Read ``until``, ``max_new_tokens``, ``temperature``, ``top_p``, ``num_beams`` (others ignored)."""
        kw = dict(gen_kwargs or {})
        until = kw.get("until") or ()
        if isinstance(until, str):
            until = (until,)
        elif not isinstance(until, (list, tuple)):
            raise ValueError(f"generation_kwargs 'until' must be a string or a list, got {until!r}")
        return cls(
            max_new_tokens=int(kw.get("max_new_tokens") or default_max_new_tokens),
            until=tuple(str(u) for u in until),
            temperature=float(kw.get("temperature") or 0.0),
            top_p=None if kw.get("top_p") is None else float(kw["top_p"]),
            num_beams=int(kw.get("num_beams") or 1),
        )

    def hf_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``model.generate`` (greedy unless temperature > 0)."""
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams}
        if self.temperature > 0:
            kwargs.update(do_sample=True, temperature=self.temperature)
            if self.top_p is not None:
                kwargs["top_p"] = self.top_p
        else:
            kwargs["do_sample"] = False
        return kwargs


def clean_context(vlm: PrunedVLM, context: str) -> str:
    """The task's text without image placeholders (the chat template adds them itself)."""
    token = getattr(vlm.processor, "image_token", None) or "<image>"
    return context.replace(token, "").strip()


def chat_text(vlm: PrunedVLM, context: str, num_images: int) -> str:
    """The model's chat prompt around ``num_images`` images and the task's text."""
    text = clean_context(vlm, context)
    if not text:
        raise ValueError("the task gave an empty prompt (after removing image placeholders)")
    return vlm.chat_prompt(text, num_images)


def encode_texts(vlm: PrunedVLM, images: Sequence[Sequence[Image.Image]], texts: Sequence[str]) -> Any:
    """Processor outputs for already formatted ``texts``; ``images`` per text (all empty = text only).

    Images go to the processor grouped per text, as :meth:`PrunedVLM.encode_inputs` passes them
    (Gemma 3's processor needs the grouping; the others accept it).
    """
    nested = [[im.convert("RGB") for im in group] for group in images]
    if any(nested):
        inputs = vlm.processor(images=nested, text=list(texts), padding=True, padding_side="left", return_tensors="pt")
    else:
        inputs = vlm.processor(text=list(texts), padding=True, padding_side="left", return_tensors="pt")
    return inputs.to(vlm.model.device)


def model_inputs(
    vlm: PrunedVLM, inputs: Any, images_per_request: Sequence[int]
) -> tuple[dict[str, Tensor], Any]:
    """Language-model inputs (pruned when there are images) and the prepared object (or None)."""
    if sum(images_per_request) == 0:
        return {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}, None
    extras = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "pixel_values")}
    prepared = prepare(
        vlm.adapter, vlm.config, inputs["input_ids"], inputs.get("attention_mask"), inputs["pixel_values"], **extras
    )
    return prepared.model_kwargs(), prepared


def count_generated(tokens: Tensor, stop_ids: set[int]) -> list[int]:
    """Generated tokens per row, up to (not counting) the first end/pad token."""
    counts = []
    for row in tokens.tolist():
        n = 0
        for t in row:
            if t in stop_ids:
                break
            n += 1
        counts.append(n)
    return counts


def special_ids(vlm: PrunedVLM) -> set[int]:
    """End-of-sequence and padding ids of the model's tokenizer."""
    tok = vlm.processor.tokenizer
    ids = {tok.eos_token_id, tok.pad_token_id, getattr(vlm.model.generation_config, "eos_token_id", None)}
    flat: set[int] = set()
    for i in ids:
        if isinstance(i, (list, tuple)):
            flat.update(int(x) for x in i)
        elif i is not None:
            flat.add(int(i))
    return flat


def generate_batch(
    vlm: PrunedVLM,
    contexts: Sequence[str],
    images: Sequence[Sequence[Image.Image]],
    settings: GenerationSettings,
) -> list[tuple[str, RequestTokens]]:
    """Answers and token counts for one batch; every request has images, or none has."""
    counts = [len(group) for group in images]
    if any(counts) and not all(counts):
        raise ValueError("a batch must not mix requests with and without images")
    texts = [chat_text(vlm, c, n) for c, n in zip(contexts, counts)]
    inputs = encode_texts(vlm, images, texts)
    kwargs = settings.hf_kwargs()
    tok = vlm.processor.tokenizer
    kwargs.setdefault("pad_token_id", tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    lm_inputs, prepared = model_inputs(vlm, inputs, counts)
    if prepared is not None:
        new_tokens = generate_pruned(vlm.model, prepared, **kwargs)
        per_request = split_reports(prepared.reports, counts)
    else:
        with torch.no_grad():
            out = vlm.model.generate(**lm_inputs, **kwargs)
        new_tokens = out[:, lm_inputs["input_ids"].shape[1] :]
        per_request = [[] for _ in counts]
    decoded = vlm.processor.batch_decode(new_tokens, skip_special_tokens=True)
    generated = count_generated(new_tokens, special_ids(vlm))
    text_only = inputs["attention_mask"].sum(dim=1).tolist()
    return [
        (truncate_at_stop(text, settings.until).strip(), request_tokens(reports, n_out, n_text))
        for text, reports, n_out, n_text in zip(decoded, per_request, generated, text_only)
    ]


def continuation_lengths(vlm: PrunedVLM, prompts: Sequence[str], continuations: Sequence[str]) -> list[int]:
    """Tokens each continuation adds to its prompt (at least 1)."""
    tok = vlm.processor.tokenizer
    lengths = []
    for prompt, cont in zip(prompts, continuations):
        full = len(tok(prompt + cont)["input_ids"])
        alone = len(tok(prompt)["input_ids"])
        if full <= alone:
            raise ValueError(f"continuation {cont!r} adds no token to the prompt")
        lengths.append(full - alone)
    return lengths


@dataclass(frozen=True)
class ContinuationScore:
    """How likely a continuation is after its (pruned) prompt.

    Attributes:
        logprob: summed log-probability of the continuation's tokens.
        num_tokens: tokens in the continuation.
        greedy: whether greedy decoding produces exactly these tokens.
        tokens: the request's token counts.
    """

    logprob: float
    num_tokens: int
    greedy: bool
    tokens: RequestTokens

    @property
    def mean_nll(self) -> float:
        """Mean negative log-likelihood per continuation token (the loss lmms-eval's models report)."""
        return -self.logprob / self.num_tokens


def loglikelihood_batch(
    vlm: PrunedVLM,
    contexts: Sequence[str],
    continuations: Sequence[str],
    images: Sequence[Sequence[Image.Image]],
) -> list[ContinuationScore]:
    """Score each continuation after its (pruned) prompt: log-probability and whether it is greedy."""
    counts = [len(group) for group in images]
    if any(counts) and not all(counts):
        raise ValueError("a batch must not mix requests with and without images")
    prompts = [chat_text(vlm, c, n) for c, n in zip(contexts, counts)]
    lengths = continuation_lengths(vlm, prompts, continuations)
    inputs = encode_texts(vlm, images, [p + c for p, c in zip(prompts, continuations)])
    lm_inputs, prepared = model_inputs(vlm, inputs, counts)
    with torch.no_grad():
        if prepared is not None:
            with prepared.active():
                logits = vlm.model(**lm_inputs).logits
            ids = prepared.spliced.input_ids
            per_request = split_reports(prepared.reports, counts)
        else:
            logits = vlm.model(**lm_inputs).logits
            ids = lm_inputs["input_ids"]
            per_request = [[] for _ in counts]
    text_only = inputs["attention_mask"].sum(dim=1).tolist()
    results = []
    for b, n in enumerate(lengths):
        # left padding: every row ends at the last position; position t predicts token t + 1
        step_logits = logits[b, -n - 1 : -1].float().log_softmax(dim=-1)
        target = ids[b, -n:].to(step_logits.device)
        logprob = step_logits.gather(-1, target[:, None]).sum().item()
        greedy = bool((step_logits.argmax(dim=-1) == target).all())
        results.append(ContinuationScore(float(logprob), n, greedy, request_tokens(per_request[b], 0, text_only[b])))
    return results
