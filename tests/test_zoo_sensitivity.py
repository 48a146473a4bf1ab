"""ZOO-Prune sensitivity (paper Eqs. 1-4) against independent references."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from zooprune.methods.zoo import draw_directions, normalize_scores, sensitivity


def mlp(d_v: int = 12, d_l: int = 20, seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """LLaVA-style projector: Linear -> GELU -> Linear."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_v, d_l), nn.GELU(), nn.Linear(d_l, d_l)).to(dtype)


def loop_reference(x: torch.Tensor, proj: nn.Module, u: torch.Tensor, h: float) -> torch.Tensor:
    """One token, one direction at a time: (1/m) sum_j ||(M(x+hu) - M(x-hu)) / 2h||."""
    out = torch.zeros(x.shape[0], dtype=x.dtype)
    for i in range(x.shape[0]):
        norms = [((proj(x[i] + h * uj) - proj(x[i] - h * uj)) / (2 * h)).norm() for uj in u]
        out[i] = torch.stack(norms).mean()
    return out


def test_matches_per_token_loop():
    proj = mlp()
    x = torch.randn(9, 12) * 3
    u = draw_directions(7, 12, torch.Generator().manual_seed(3))
    got = sensitivity(x, proj, directions=u, step=0.05)
    with torch.no_grad():
        want = loop_reference(x, proj, u, 0.05)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_converges_to_exact_directional_derivative_in_float64():
    proj = mlp(dtype=torch.float64)
    x = torch.randn(6, 12, dtype=torch.float64)
    u = draw_directions(5, 12, torch.Generator().manual_seed(0)).double()
    exact = torch.zeros(6, dtype=torch.float64)
    for i in range(6):
        for uj in u:
            _, ju = torch.func.jvp(proj, (x[i],), (uj,))
            exact[i] += ju.norm() / len(u)
    errors = [
        (sensitivity(x, proj, directions=u, step=h) - exact).abs().max().item() for h in (1e-1, 1e-3, 1e-5)
    ]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-8


def test_chunking_batching_and_given_directions_agree():
    proj = mlp()
    x = torch.randn(3, 10, 12)
    g = torch.Generator().manual_seed(5)
    u = draw_directions(16, 12, torch.Generator().manual_seed(5))
    full = sensitivity(x, proj, num_directions=16, generator=g)
    assert full.shape == (3, 10) and full.dtype == torch.float32
    torch.testing.assert_close(full, sensitivity(x, proj, directions=u, chunk_size=3))
    for b in range(3):  # one bank shared by all images: batch == one by one
        torch.testing.assert_close(full[b], sensitivity(x[b], proj, directions=u, chunk_size=1))


def test_unit_directions_and_seeding():
    u = draw_directions(32, 12, torch.Generator().manual_seed(9))
    torch.testing.assert_close(u.norm(dim=-1), torch.ones(32))
    assert torch.equal(u, draw_directions(32, 12, torch.Generator().manual_seed(9)))
    assert not torch.equal(u, draw_directions(32, 12, torch.Generator().manual_seed(10)))
    assert torch.equal(u, draw_directions(32, 12, torch.Generator().manual_seed(9)))
    assert torch.equal(draw_directions(4, 12), draw_directions(4, 12))  # no generator: still deterministic


def test_half_precision_projector_scores_like_its_float32_copy():
    """Tolerance: scores within 2 % (bf16 weight rounding only); ranking nearly identical."""
    proj32 = mlp(d_v=64, d_l=96, seed=1)
    x = torch.randn(40, 64)
    for dtype in (torch.bfloat16, torch.float16):
        proj_half = mlp(d_v=64, d_l=96, seed=1, dtype=dtype)
        half = sensitivity(x.to(dtype), proj_half, generator=torch.Generator().manual_seed(0))
        ref = sensitivity(
            x.to(dtype).float(), copy.deepcopy(proj_half).float(), generator=torch.Generator().manual_seed(0)
        )
        full = sensitivity(x, proj32, generator=torch.Generator().manual_seed(0))
        assert half.dtype == torch.float32
        torch.testing.assert_close(half, ref)  # computed in float32 whatever the weights
        torch.testing.assert_close(half, full, rtol=2e-2, atol=0)
        assert half.unique().numel() == 40  # never flattened to equal scores by rounding
        assert next(proj_half.parameters()).dtype == dtype  # the caller's module is untouched


def test_normalize_scores():
    s = torch.tensor([[1.0, 3.0, 2.0], [5.0, 5.0, 5.0]])
    torch.testing.assert_close(
        normalize_scores(s), torch.tensor([[0.0, 1.0, 0.5], [1.0, 1.0, 1.0]]), atol=1e-7, rtol=0
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_are_rejected(bad):
    x = torch.randn(4, 12)
    x[2, 3] = bad
    with pytest.raises(ValueError, match="NaN/inf"):
        sensitivity(x, mlp())


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="features must be"):
        sensitivity(torch.randn(12), mlp())
    with pytest.raises(ValueError, match="directions must be"):
        sensitivity(torch.randn(4, 12), mlp(), directions=torch.randn(3, 5))
