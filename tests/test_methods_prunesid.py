"""PruneSID against a naive transcription of its selection rule (ZhengyaoFang/PruneSID
``CLIPVisionTower_PruneSID.forward``, ``batch_pca``, ``batch_similarity_nms``), on random and
CLIP-like inputs, plus option errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zooprune.config import PruneConfig
from zooprune.methods import PruneContext, get_method
from zooprune.methods.prunesid import group_budgets


def clip_like(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features with a few huge outlier channels and a peaked [CLS] attention (a few sink tokens)."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, d, generator=g)
    feats[:, :3] = 40.0 + 8.0 * torch.randn(n, 3, generator=g)
    logits = 2.0 * torch.randn(n, generator=g)
    logits[torch.randint(0, n, (3,), generator=g)] += 8.0
    # float64: with outlier channels the similarities crowd near 1, closer than float32 resolves
    return feats.double(), torch.softmax(logits.double(), dim=0)


def naive_groups(feats: torch.Tensor, q: int) -> list[int]:
    """PCA over tokens by the eigenvectors of the Gram matrix (float64): token -> group."""
    a = torch.sigmoid(feats.double())  # (N, d): row i = token i over the channels
    a = a - a.mean(dim=1, keepdim=True)  # centre each token over the channels
    _, vecs = torch.linalg.eigh(a @ a.T)  # ascending eigenvalues of A_c^T A_c
    top = vecs[:, -q:].flip(-1)  # (N, q), largest component first
    return [int(torch.argmax(top[i].abs())) for i in range(feats.shape[0])]


def naive_budgets(counts: list[int], survivors: list[int], k: int, cap: int = 5) -> list[int]:
    """Reference step 4 with scalar float32 arithmetic (its tensors are float32)."""
    q = len(counts)
    lower = [min(1, c) for c in counts]
    upper = [min(cap * math.ceil(k / 64), c, m) for c, m in zip(counts, survivors)]
    while sum(upper) < k:
        upper = [min(u + 1, c) for u, c in zip(upper, counts)]
    other = max(k - sum(lower), 0)
    total = np.float32(sum(survivors))
    cum, prev, budget = np.float32(0), 0, []
    for g in range(q):
        cum = np.float32(cum + np.float32(survivors[g]) / total)
        upto = int(np.round(np.float32(cum * np.float32(other))))
        budget.append(min(upto - prev + lower[g], upper[g]))
        prev = upto
    for g in sorted(range(q), key=lambda g: (-survivors[g], g)):
        short = other + sum(lower) - sum(budget)
        if short <= 0:
            break
        budget[g] += min(upper[g] - budget[g], short)
    return budget


def naive_prunesid(feats: torch.Tensor, attn: torch.Tensor, k: int, components: int | None = None) -> list[int]:
    """The reference rule token by token (written from the reference code), [CLS] left out."""
    n, d = feats.shape
    if k >= n:
        return list(range(n))
    q = max(1, min(components or int(k / 4), d - 1, n, k))
    group = naive_groups(feats, q)
    x = feats.double()
    unit = [x[i] / x[i].norm() for i in range(n)]
    sim = [[float(unit[i] @ unit[j]) for j in range(n)] for i in range(n)]
    pairs = [sim[i][j] for i in range(n) for j in range(i + 1, n)]
    tau = (k / 32) * sum(pairs) / len(pairs)
    a = attn.double().tolist()
    rankings, counts, survivors = [], [], []
    for g in range(q):
        members = [i for i in range(n) if group[i] == g]
        alive, picks = set(members), []
        while alive:  # greedy NMS by [CLS] attention
            best = max(alive, key=lambda i: (a[i], -i))
            picks.append(best)
            alive = {j for j in alive if j != best and sim[best][j] <= tau}
        rest = sorted(set(members) - set(picks), key=lambda i: (-a[i], i))
        rankings.append(picks + rest)
        counts.append(len(members))
        survivors.append(len(picks))
    budget = naive_budgets(counts, survivors, k)
    return sorted(i for r, t in zip(rankings, budget) for i in r[:t])


def _ctx(feats: torch.Tensor, attn: torch.Tensor, **options) -> PruneContext:
    return PruneContext(projected=torch.zeros(feats.shape[0], 4), features=feats, cls_attention=attn, options=options)


@pytest.mark.parametrize("seed", range(25))
def test_matches_naive_transcription_random(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(6, 80, (1,), generator=g))
    d = int(torch.randint(4, 40, (1,), generator=g))
    k = int(torch.randint(1, n + 1, (1,), generator=g))
    feats, attn = torch.randn(n, d, generator=g), torch.rand(n, generator=g)
    got = get_method("prunesid")(_ctx(feats, attn), k).indices
    assert got.tolist() == naive_prunesid(feats, attn, k)


@pytest.mark.parametrize(("n", "k", "seed"), [(576, 64, 0), (576, 128, 1), (576, 192, 2), (144, 16, 3), (150, 40, 4)])
def test_matches_naive_transcription_clip_like(n: int, k: int, seed: int) -> None:
    feats, attn = clip_like(n, 64, seed)
    got = get_method("prunesid")(_ctx(feats, attn), k)
    assert got.indices.tolist() == naive_prunesid(feats, attn, k)
    assert torch.equal(got.scores, attn.float())


def test_components_option() -> None:
    feats, attn = clip_like(100, 32, 5)
    for q, k in ((1, 20), (3, 20), (9, 20), (9, 5)):  # q > k: capped at k groups
        got = get_method("prunesid")(_ctx(feats, attn, components=q), k).indices
        assert got.tolist() == naive_prunesid(feats, attn, k, components=q)
    with pytest.raises(ValueError, match="non-empty groups"):
        group_budgets(torch.tensor([3, 3, 3]), torch.tensor([1, 1, 1]), 2)


def test_budgets_sum_to_k_within_group_sizes() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        q = int(torch.randint(1, 12, (1,), generator=g))
        counts = torch.randint(0, 30, (q,), generator=g)
        counts[0] += 1
        survivors = torch.minimum(counts, torch.randint(1, 30, (q,), generator=g))
        k = int(torch.randint(int((counts > 0).sum()), int(counts.sum()) + 1, (1,), generator=g))
        budget = group_budgets(counts, survivors, k)
        assert int(budget.sum()) == k and bool((budget <= counts).all()) and bool((budget >= 0).all())
        assert budget.tolist() == naive_budgets(counts.tolist(), survivors.tolist(), k)


def test_option_errors_and_missing_inputs() -> None:
    with pytest.raises(ValueError, match="components must be >= 1"):
        PruneConfig(method="prunesid", options={"components": 0})
    with pytest.raises(ValueError, match="group_cap must be >= 1"):
        PruneConfig(method="prunesid", options={"group_cap": 0})
    with pytest.raises(TypeError, match="option 'components' of method 'prunesid' must be int"):
        PruneConfig(method="prunesid", options={"components": 1.5})
    feats, attn = clip_like(20, 8, 0)
    for missing in ("cls_attention", "features"):
        ctx = _ctx(feats, attn)
        setattr(ctx, missing, None)
        with pytest.raises(ValueError, match=missing):
            get_method("prunesid")(ctx, 4)
    with pytest.raises(ValueError, match="rows"):
        get_method("prunesid")(_ctx(feats[:10], attn), 4)
