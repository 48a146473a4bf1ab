"""Invariants that define the pre-LLM baselines: pool, divprune, visionzip, cdpruner.

Each test re-derives the method from its published description (naive loops, float64 where
it helps) and compares with the library's tensor implementation on small random inputs.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from zooprune.methods import PruneContext, get_method
from zooprune.methods.cdpruner import greedy_dpp, relevance
from zooprune.methods.divprune import divprune_select
from zooprune.methods.pool import pool_grid
from zooprune.methods.visionzip import dominant_contextual_split


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- divprune


def naive_divprune(z: torch.Tensor, k: int) -> list[int]:
    """Transcription of DivPrune (vbdi/divprune ``DivPrune``): O(k^2 N), no running minimum."""
    zn = z / z.norm(dim=1, keepdim=True)
    dist = 1.0 - zn @ zn.T  # (N, N) cosine distance
    picked: list[int] = []
    for i in range(k):
        if i == 0:
            scores = torch.topk(dist, 2, dim=0, largest=False).values[1, :]  # nearest other token
        else:
            scores = dist[picked].min(dim=0).values  # distance to the picked set (Eq. 3)
        picked.append(int(torch.argmax(scores)))
    return sorted(picked)


@pytest.mark.parametrize("seed", range(40))
def test_divprune_matches_naive_transcription(seed: int) -> None:
    g = _gen(seed)
    n = int(torch.randint(4, 40, (1,), generator=g))
    d = int(torch.randint(2, 17, (1,), generator=g))
    k = int(torch.randint(1, n + 1, (1,), generator=g))
    z = torch.randn(n, d, generator=g)
    got = get_method("divprune")(PruneContext(projected=z), k).indices
    assert got.tolist() == naive_divprune(z, k)


def test_divprune_batch_and_duplicates() -> None:
    g = _gen(0)
    z = torch.randn(3, 20, 8, generator=g)
    batched = divprune_select(z, 7)
    assert torch.equal(batched, torch.stack([divprune_select(x, 7) for x in z]))
    # Exact duplicates never make a token be picked twice.
    dup = torch.cat([z[0, :5], z[0, :5]], dim=0)  # (10, 8)
    kept = divprune_select(dup, 10)
    assert kept.tolist() == list(range(10))


# ----------------------------------------------------------------------------- pool


def _best_product(rows: int, cols: int, k: int) -> int:
    return max(r * c for r in range(1, rows + 1) for c in range(1, cols + 1) if r * c <= k)


def test_pool_grid_choice() -> None:
    assert pool_grid(24, 24, 64) == (8, 8)
    assert pool_grid(24, 24, 128) == (8, 16)
    assert pool_grid(24, 24, 192) == (12, 16)
    assert pool_grid(24, 24, 31) == (5, 6)
    assert pool_grid(24, 24, 576) == (24, 24)
    assert pool_grid(24, 24, 1) == (1, 1)
    for rows, cols in [(24, 24), (6, 7), (3, 10)]:
        for k in range(1, rows * cols + 1):
            r, c = pool_grid(rows, cols, k)
            assert r <= rows and c <= cols and r * c == _best_product(rows, cols, k)


@pytest.mark.parametrize("k", [1, 4, 7, 12, 20, 29, 41])
def test_pool_tokens_are_cell_means(k: int) -> None:
    rows, cols, d = 6, 7, 5
    z = torch.randn(rows * cols, d, generator=_gen(k))
    sel = get_method("pool")(PruneContext(projected=z, grid=(rows, cols)), k)
    out_r, out_c = pool_grid(rows, cols, k)
    assert sel.tokens is not None and sel.tokens.shape == (out_r * out_c, d)
    assert sel.indices.shape == (out_r * out_c,) and len(sel.indices) <= k
    assert torch.equal(sel.indices, torch.unique(sel.indices))  # sorted, unique
    grid = z.reshape(rows, cols, d)
    for i in range(out_r):
        r0, r1 = math.floor(i * rows / out_r), math.ceil((i + 1) * rows / out_r)
        for j in range(out_c):
            c0, c1 = math.floor(j * cols / out_c), math.ceil((j + 1) * cols / out_c)
            cell = i * out_c + j
            expected = grid[r0:r1, c0:c1].reshape(-1, d).mean(dim=0)
            torch.testing.assert_close(sel.tokens[cell], expected)
            ri, ci = divmod(int(sel.indices[cell]), cols)
            assert r0 <= ri < r1 and c0 <= ci < c1  # the reported token lies in its cell


def test_pool_needs_a_grid() -> None:
    z = torch.randn(12, 4)
    with pytest.raises(ValueError, match="grid"):
        get_method("pool")(PruneContext(projected=z), 4)
    with pytest.raises(ValueError, match="grid"):
        get_method("pool")(PruneContext(projected=z, grid=(3, 5)), 4)


# ----------------------------------------------------------------------------- visionzip


def _visionzip_ctx(n: int, seed: int, heads: int = 2, head_dim: int = 3, **options) -> PruneContext:
    g = _gen(seed)
    d_v, d_l = 6, 5
    torch.manual_seed(seed)
    projector = nn.Sequential(nn.Linear(d_v, 8), nn.GELU(), nn.Linear(8, d_l))
    feats = torch.randn(n, d_v, generator=g)
    with torch.no_grad():
        projected = projector(feats)
    return PruneContext(
        projected=projected,
        features=feats,
        projector=projector,
        cls_attention=torch.rand(n, generator=g),
        keys=torch.randn(n, heads, head_dim, generator=g),
        options=dict(options),
    )


def naive_contextual(ctx: PruneContext, dominant: list[int], k_c: int, mode: str) -> torch.Tensor:
    """VisionZip contextual tokens from the reference description, one token at a time."""
    rest = [i for i in range(ctx.num_tokens) if i not in set(dominant)]
    step = max(1, len(rest) // k_c)
    targets = list(range(0, len(rest), step))[:k_c]
    keys = ctx.keys.double().mean(dim=1)  # head-averaged keys (reference "metric")
    keys = keys / keys.norm(dim=-1, keepdim=True)
    members: dict[int, list[int]] = {t: [] for t in range(k_c)}
    for pos, tok in enumerate(rest):
        if pos in targets:
            continue
        sims = [float(keys[tok] @ keys[rest[t]]) for t in targets]
        members[max(range(k_c), key=lambda t: (sims[t], -t))].append(tok)
    feats = ctx.features.double()
    merged = []
    for t, pos in enumerate(targets):
        own, others = feats[rest[pos]], members[t]
        if mode == "reference":  # target + mean of the tokens assigned to it
            merged.append(own + (feats[others].mean(dim=0) if others else torch.zeros_like(own)))
        else:  # plain mean over target and members
            merged.append(feats[[rest[pos], *others]].mean(dim=0))
    with torch.no_grad():
        return ctx.projector(torch.stack(merged).float())


def test_visionzip_split() -> None:
    assert dominant_contextual_split(64, 576) == (54, 10)
    assert dominant_contextual_split(128, 576) == (108, 20)
    assert dominant_contextual_split(192, 576) == (162, 30)
    assert dominant_contextual_split(1, 576) == (1, 0)
    assert dominant_contextual_split(2, 576) == (1, 1)
    assert dominant_contextual_split(576, 576) == (486, 90)
    assert dominant_contextual_split(10, 576, dominant=7) == (7, 3)
    assert dominant_contextual_split(10, 576, contextual=0) == (10, 0)
    with pytest.raises(ValueError):
        dominant_contextual_split(10, 576, contextual=10)


@pytest.mark.parametrize(
    ("n", "k", "mode", "seed"),
    [
        (30, 8, "reference", 0),
        (30, 8, "mean", 1),
        (25, 13, "reference", 2),
        (40, 2, "reference", 3),
        (16, 15, "reference", 4),
        (50, 20, "mean", 5),
        (12, 1, "reference", 6),
    ],
)
def test_visionzip_dominant_and_contextual(n: int, k: int, mode: str, seed: int) -> None:
    ctx = _visionzip_ctx(n, seed, merge=mode)
    sel = get_method("visionzip")(ctx, k)
    k_d, k_c = dominant_contextual_split(k, n)
    top = torch.topk(ctx.cls_attention, k_d).indices.sort().values
    assert torch.equal(sel.indices, top)  # dominant = top-k_d [CLS] attention
    assert sel.tokens is not None and sel.tokens.shape == (k, ctx.projected.shape[1])
    torch.testing.assert_close(sel.tokens[:k_d], ctx.projected[top])  # dominant, original order
    expected = naive_contextual(ctx, top.tolist(), k_c, mode) if k_c else sel.tokens[k_d:]
    torch.testing.assert_close(sel.tokens[k_d:], expected, rtol=1e-5, atol=1e-5)


def test_merging_methods_keep_all_is_identity() -> None:
    ctx = _visionzip_ctx(12, 8)
    ctx.grid = (3, 4)
    for name in ("visionzip", "pool"):
        sel = get_method(name)(ctx, 12)
        assert sel.indices.tolist() == list(range(12)) and sel.tokens is None


def test_visionzip_key_layouts_and_errors() -> None:
    ctx = _visionzip_ctx(30, 7, heads=3, head_dim=4)
    ref = get_method("visionzip")(ctx, 10).tokens
    flat = PruneContext(**{**ctx.__dict__, "keys": ctx.keys.reshape(30, 12), "options": {"num_heads": 3}})
    torch.testing.assert_close(get_method("visionzip")(flat, 10).tokens, ref)
    for missing in ("cls_attention", "keys", "features", "projector"):
        bad = PruneContext(**{**ctx.__dict__, missing: None})
        with pytest.raises(ValueError, match=missing):
            get_method("visionzip")(bad, 10)


# ----------------------------------------------------------------------------- cdpruner


def naive_cdpruner(z: torch.Tensor, e: torch.Tensor, k: int) -> list[int]:
    """Greedy log-det maximisation of L = diag(r) S diag(r), recomputing every determinant."""
    z64, e64 = z.double(), e.double()
    zn = z64 / z64.norm(dim=-1, keepdim=True)
    en = e64 / e64.norm(dim=-1, keepdim=True)
    r = (zn @ en.T).mean(dim=-1)
    r = (r - r.min() + 1e-6) / (r.max() - r.min())
    kernel = r[:, None] * (zn @ zn.T) * r[None, :]
    picked: list[int] = []
    for _ in range(k):
        best, best_val = -1, -math.inf
        for c in range(z.shape[0]):
            if c in picked:
                continue
            idx = [*picked, c]
            sign, logdet = torch.linalg.slogdet(kernel[idx][:, idx])
            val = float(logdet) if sign > 0 else -math.inf
            if val > best_val:
                best, best_val = c, val
        picked.append(best)
    return picked


@pytest.mark.parametrize("seed", range(20))
def test_cdpruner_matches_naive_greedy_logdet(seed: int) -> None:
    g = _gen(seed)
    n, d, t = 10, 16, 3  # d >= n: the kernel is positive definite
    k = int(torch.randint(1, n + 1, (1,), generator=g))
    z, e = torch.randn(n, d, generator=g), torch.randn(t, d, generator=g)
    expected = naive_cdpruner(z, e, k)
    rel = relevance(z, e)
    zn = z / z.norm(dim=-1, keepdim=True)
    order = greedy_dpp(rel[:, None] * (zn @ zn.T) * rel[None, :], k)
    assert order.tolist() == expected  # same picks in the same order
    sel = get_method("cdpruner")(PruneContext(projected=z, instruction=e), k)
    assert sel.indices.tolist() == sorted(expected)


def test_cdpruner_relevance_changes_picks() -> None:
    z = torch.randn(12, 16, generator=_gen(0))
    method = get_method("cdpruner")
    picks = []
    for j in range(12):  # instruction = one visual token: it is the most relevant token
        first = method(PruneContext(projected=z, instruction=z[j : j + 1]), 1).indices
        assert first.tolist() == [j]
        picks.append(tuple(method(PruneContext(projected=z, instruction=z[j : j + 1]), 4).indices.tolist()))
        assert j in picks[-1]
    assert len(set(picks)) > 1
    flipped = PruneContext(projected=z, instruction=z[3:4], options={"negate_relevance": True})
    assert method(flipped, 1).indices.tolist() != [3]


def test_cdpruner_rank_deficient_and_errors() -> None:
    z = torch.randn(30, 4, generator=_gen(1))  # rank(S) <= 4 < N
    sel = get_method("cdpruner")(PruneContext(projected=z, instruction=torch.randn(2, 4)), 30)
    assert sel.indices.tolist() == list(range(30))
    with pytest.raises(ValueError, match="instruction"):
        get_method("cdpruner")(PruneContext(projected=z), 5)
    with pytest.raises(ValueError, match="instruction"):
        get_method("cdpruner")(PruneContext(projected=z, instruction=torch.randn(0, 4)), 5)
