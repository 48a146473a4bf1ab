"""HoloV against a naive transcription of its selection rule (obananas/HoloV
``llava/model/utils.py::HoloV``), on random and CLIP-like inputs, plus option errors."""

from __future__ import annotations

import math

import pytest
import torch

from zooprune.config import PruneConfig
from zooprune.methods import PruneContext, get_method
from zooprune.methods.holov import allocate


def clip_like(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens with a few huge outlier channels and a peaked [CLS] attention (a few sink tokens)."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(n, d, generator=g)
    tokens[:, :3] = 30.0 + 6.0 * torch.randn(n, 3, generator=g)
    logits = 2.0 * torch.randn(n, generator=g)
    logits[torch.randint(0, n, (3,), generator=g)] += 8.0
    # float64: with outlier channels the similarities crowd near 1, closer than float32 resolves
    return tokens.double(), torch.softmax(logits.double(), dim=0)


def naive_holov(x: torch.Tensor, attn: torch.Tensor, k: int, crops: int = 16, alpha: float = 0.09) -> list[int]:
    """The reference rule with explicit loops in float64 (written from the reference code)."""
    n = attn.shape[0]
    if k >= n:
        return list(range(n))
    x, a = x.double(), attn.double().tolist()
    groups, start = [], 0
    for p in range(crops):  # contiguous raster slices, the first n % crops one longer
        size = n // crops + (1 if p < n % crops else 0)
        if size:
            groups.append(list(range(start, start + size)))
        start += size
    scores = []
    for idx in groups:
        m = len(idx)
        if m == 1:
            scores.append(a[idx[0]])
            continue
        unit = [x[i] / (float(x[i].norm()) + 1e-6) for i in idx]
        sim = [[float(unit[i] @ unit[j]) if i != j else 0.0 for j in range(m)] for i in range(m)]
        mean = [sum(row) / (m - 1) for row in sim]
        var = [sum((s - mean[i]) ** 2 for s in sim[i]) / (m - 1) for i in range(m)]
        att = [1e3 * a[i] for i in idx]
        scale = (sum(abs(v) for v in att) / m) / (sum(abs(v) for v in var) / m + 1e-6)
        scores.append(sum(att[i] + alpha * var[i] * scale for i in range(m)) / m)
    total = sum(scores)
    w = [s / (total + 1e-6) for s in scores]
    alloc = [math.floor(wi * k) for wi in w]
    by_weight = sorted(range(len(groups)), key=lambda p: (-w[p], p))
    for p in by_weight[: k - sum(alloc)]:
        alloc[p] += 1
    alloc = [min(c, len(idx)) for c, idx in zip(alloc, groups)]
    for p in by_weight:  # excess of full crops handed on (documented deviation)
        alloc[p] += min(len(groups[p]) - alloc[p], k - sum(alloc))
    kept = []
    for idx, c in zip(groups, alloc):
        kept += sorted(idx, key=lambda i: (-a[i], i))[:c]
    return sorted(kept)


def _ctx(x: torch.Tensor, attn: torch.Tensor, **options) -> PruneContext:
    return PruneContext(projected=x, cls_attention=attn, options=options)


@pytest.mark.parametrize("seed", range(30))
def test_matches_naive_transcription_random(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(4, 120, (1,), generator=g))
    d = int(torch.randint(2, 24, (1,), generator=g))
    k = int(torch.randint(1, n + 1, (1,), generator=g))
    crops = int(torch.randint(1, 20, (1,), generator=g))
    x, attn = torch.randn(n, d, generator=g), torch.rand(n, generator=g)
    got = get_method("holov")(_ctx(x, attn, crops=crops), k).indices
    assert got.tolist() == naive_holov(x, attn, k, crops)


@pytest.mark.parametrize(("n", "k", "seed"), [(576, 64, 0), (576, 128, 1), (576, 192, 2), (144, 16, 3), (100, 30, 4)])
def test_matches_naive_transcription_clip_like(n: int, k: int, seed: int) -> None:
    x, attn = clip_like(n, 32, seed)
    got = get_method("holov")(_ctx(x, attn), k)
    assert got.indices.tolist() == naive_holov(x, attn, k)
    assert torch.equal(got.scores, attn.float())


def test_budget_follows_the_crops_and_alpha_matters() -> None:
    x, attn = clip_like(576, 32, 7)
    attn = attn.clone()
    attn[:36] *= 50.0  # the first crop (36 tokens) dominates the attention
    kept = get_method("holov")(_ctx(x, attn), 64).indices
    first = int((kept < 36).sum())
    assert 1 <= first <= 36 and first > 64 // 16  # more than an even share, never more than the crop
    assert len(set((kept // 36).tolist())) > 1  # other crops keep tokens too
    plain = get_method("holov")(_ctx(x, attn, alpha=0.0), 64).indices
    assert plain.tolist() == naive_holov(x, attn, 64, alpha=0.0)


def test_full_crops_hand_their_excess_on() -> None:
    sizes = torch.tensor([3, 10, 10])
    alloc = allocate(torch.tensor([0.9, 0.06, 0.04]), sizes, 12)  # floor 10, 0, 0; leftover 2 -> 11, 1, 0
    assert alloc.tolist() == [3, 9, 0]  # the full crop's 8 go on by weight (the reference pads 8 zeros)
    x, attn = clip_like(48, 8, 8)
    attn = attn.clone()
    attn[:3] += 10.0
    kept = get_method("holov")(_ctx(x, attn), 20).indices
    assert kept.numel() == 20 and set(range(3)) <= set(kept.tolist())


def test_option_errors_and_missing_inputs() -> None:
    with pytest.raises(ValueError, match="crops must be >= 1"):
        PruneConfig(method="holov", options={"crops": 0})
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        PruneConfig(method="holov", options={"alpha": -0.1})
    with pytest.raises(TypeError, match="option 'crops' of method 'holov' must be int"):
        PruneConfig(method="holov", options={"crops": "many"})
    x, attn = clip_like(20, 8, 0)
    with pytest.raises(ValueError, match="cls_attention"):
        get_method("holov")(PruneContext(projected=x), 4)
    with pytest.raises(ValueError, match="rows"):
        get_method("holov")(_ctx(x[:10], attn), 4)
