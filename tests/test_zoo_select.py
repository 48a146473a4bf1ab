"""SADS selection (paper Eqs. 6-7) against a naive O(k^2 N) transcription."""

from __future__ import annotations

import pytest
import torch

from zooprune.methods.zoo import select


def naive_sads(z: torch.Tensor, s: torch.Tensor, k: int) -> torch.Tensor:
    """Straightforward form: recompute the min distance over all picks at every step."""
    n = z.shape[0]
    zn = z / z.norm(dim=-1, keepdim=True)
    dist = 1 - zn @ zn.T
    weight = (s - s.min()) / (s.max() - s.min() + 1e-8) if s.max() > s.min() else torch.ones_like(s)
    picked: list[int] = []
    for _ in range(k):
        best, best_val = -1, -float("inf")
        for i in range(n):
            if i in picked:
                continue
            val = weight[i].item() if not picked else (weight[i] * min(dist[i, j] for j in picked)).item()
            if val > best_val:  # strict: ties keep the lowest index
                best, best_val = i, val
        picked.append(best)
    return torch.tensor(sorted(picked))


@pytest.mark.parametrize("seed", range(12))
def test_matches_naive(seed):
    g = torch.Generator().manual_seed(seed)
    n, d = 30 + seed, 8
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    s = torch.rand(n, generator=g, dtype=torch.float64)
    k = 1 + seed % 11
    assert torch.equal(select(z, s, k), naive_sads(z, s, k))


def test_ties_and_constant_scores_match_naive():
    z = torch.randn(20, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    z[5] = z[2]  # duplicate token: distance 0
    for s in (torch.ones(20, dtype=torch.float64), torch.arange(20.0, dtype=torch.float64) % 3):
        assert torch.equal(select(z, s, 7), naive_sads(z, s, 7))


def test_batched_equals_one_by_one_and_output_contract():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 50, 16, generator=g)
    s = torch.rand(4, 50, generator=g)
    out = select(z, s, 9)
    assert out.shape == (4, 9) and out.dtype == torch.long
    for b in range(4):
        assert torch.equal(out[b], select(z[b], s[b], 9))
        assert torch.equal(out[b], out[b].unique())  # sorted, unique


def test_keep_all_and_errors():
    z, s = torch.randn(10, 4), torch.rand(10)
    assert torch.equal(select(z, s, 10), torch.arange(10))
    assert torch.equal(select(z, s, 99), torch.arange(10))
    with pytest.raises(ValueError, match="k must be"):
        select(z, s, 0)
    with pytest.raises(ValueError, match="do not match"):
        select(z, torch.rand(9), 3)
    s[3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        select(z, s, 3)
