"""VisPruner against a naive transcription of its selection rule (Theia-4869/VisPruner
``LlavaMetaForCausalLM.encode_images``), on random and CLIP-like inputs, plus option errors."""

from __future__ import annotations

import pytest
import torch

from zooprune.config import PruneConfig
from zooprune.methods import PruneContext, get_method


def clip_like(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features with a few huge outlier channels and a peaked [CLS] attention (a few sink tokens)."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, d, generator=g)
    feats[:, :3] = 40.0 + 8.0 * torch.randn(n, 3, generator=g)  # outlier channels
    logits = 2.0 * torch.randn(n, generator=g)
    logits[torch.randint(0, n, (3,), generator=g)] += 8.0  # attention sinks
    # float64: with outlier channels the similarities crowd near 1, closer than float32 resolves
    return feats.double(), torch.softmax(logits.double(), dim=0)


def naive_vispruner(attn: torch.Tensor, feats: torch.Tensor, k: int, ratio: float = 0.5, step: int = 8) -> list[int]:
    """The reference rule, one token at a time in float64 (written from the paper / reference)."""
    n = attn.shape[0]
    if k >= n:
        return list(range(n))
    n_imp = int(k * ratio)
    n_div = k - n_imp
    ranked = sorted(range(n), key=lambda i: (-float(attn[i]), i))  # descending [CLS] attention
    important, residual = ranked[:n_imp], ranked[n_imp:]
    x = feats.double()
    unit = [x[i] / x[i].norm() for i in range(n)]
    if n_div == 0:
        residual = []
    while len(residual) > n_div:
        drop = min(step, len(residual) - n_div)
        evens = residual[0::2]
        odds = residual[1::2]
        match = [max(float(unit[t] @ unit[u]) for u in odds) for t in evens]  # closest odd partner
        by_match = sorted(range(len(evens)), key=lambda i: (-match[i], i))
        residual = [evens[i] for i in by_match[drop:]] + odds  # the most duplicated evens go
    return sorted(important + residual)


def _ctx(feats: torch.Tensor, attn: torch.Tensor, **options) -> PruneContext:
    return PruneContext(projected=torch.zeros(feats.shape[0], 4), features=feats, cls_attention=attn, options=options)


@pytest.mark.parametrize("seed", range(30))
def test_matches_naive_transcription_random(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(6, 90, (1,), generator=g))
    d = int(torch.randint(3, 24, (1,), generator=g))
    k = int(torch.randint(1, n + 1, (1,), generator=g))
    ratio = float(torch.rand(1, generator=g))
    feats, attn = torch.randn(n, d, generator=g), torch.rand(n, generator=g)
    got = get_method("vispruner")(_ctx(feats, attn, important_ratio=ratio), k).indices
    assert got.tolist() == naive_vispruner(attn, feats, k, ratio)


@pytest.mark.parametrize(("n", "k", "seed"), [(576, 64, 0), (576, 128, 1), (576, 192, 2), (144, 16, 3), (200, 37, 4)])
def test_matches_naive_transcription_clip_like(n: int, k: int, seed: int) -> None:
    feats, attn = clip_like(n, 32, seed)
    got = get_method("vispruner")(_ctx(feats, attn), k)
    assert got.indices.tolist() == naive_vispruner(attn, feats, k)
    assert torch.equal(got.scores, attn.float())


@pytest.mark.parametrize("ratio", [0.0, 1.0, 0.75])
def test_split_extremes(ratio: float) -> None:
    feats, attn = clip_like(120, 16, 5)
    got = get_method("vispruner")(_ctx(feats, attn, important_ratio=ratio), 24).indices
    assert got.tolist() == naive_vispruner(attn, feats, 24, ratio)
    if ratio == 1.0:  # all important: plain top-k attention
        assert got.tolist() == sorted(torch.topk(attn, 24).indices.tolist())


def test_step_option_changes_the_rounds() -> None:
    feats, attn = clip_like(300, 16, 6)
    one = get_method("vispruner")(_ctx(feats, attn, step=1), 40).indices
    assert one.tolist() == naive_vispruner(attn, feats, 40, step=1)


def test_option_errors_and_missing_inputs() -> None:
    with pytest.raises(ValueError, match="important_ratio must be in"):
        PruneConfig(method="vispruner", options={"important_ratio": 1.5})
    with pytest.raises(ValueError, match="step must be >= 1"):
        PruneConfig(method="vispruner", options={"step": 0})
    with pytest.raises(TypeError, match="option 'step' of method 'vispruner' must be int"):
        PruneConfig(method="vispruner", options={"step": 2.5})
    feats, attn = clip_like(20, 8, 0)
    for missing in ("cls_attention", "features"):
        ctx = _ctx(feats, attn)
        setattr(ctx, missing, None)
        with pytest.raises(ValueError, match=missing):
            get_method("vispruner")(ctx, 4)
    with pytest.raises(ValueError, match="rows"):
        get_method("vispruner")(_ctx(feats[:10], attn), 4)
