"""Sensitivity estimators (methods/estimators.py): jvp vs central, closed form vs Monte Carlo."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from zooprune.methods import PruneContext, get_method
from zooprune.methods.estimators import (
    DEFAULT_ESTIMATOR,
    closed_form_sensitivity,
    estimate_sensitivity,
    get_estimator,
    jvp_sensitivity,
    list_estimators,
    mlp_structure,
    projector_kernel,
)
from zooprune.methods.zoo import draw_directions, sensitivity


def mlp(d_v: int = 12, h: int = 20, d_l: int = 16, act: nn.Module | None = None, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_v, h), act or nn.GELU(), nn.Linear(h, d_l)).eval()


def hf_projector(act: str = "gelu", seed: int = 0) -> nn.Module:
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=12, num_hidden_layers=1, num_attention_heads=2),
        text_config=LlamaConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, vocab_size=32),
        projector_hidden_act=act,
    )
    torch.manual_seed(seed)
    return LlavaMultiModalProjector(config).eval()


def jacobians(proj: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(T, d_v)`` -> ``(T, d_l, d_v)`` exact Jacobians (independent reference via jacrev)."""
    return torch.func.vmap(torch.func.jacrev(proj))(x)


def test_jvp_is_the_limit_of_central_difference_float64():
    proj = mlp().double()
    x = torch.randn(2, 7, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    u = draw_directions(16, 12, torch.Generator().manual_seed(2)).double()
    exact = jvp_sensitivity(x, proj, directions=u)
    errors = [
        (sensitivity(x, proj, directions=u, step=h) - exact).abs().max().item()
        for h in (1e-1, 1e-2, 1e-3, 1e-4)
    ]
    assert errors == sorted(errors, reverse=True)  # converges as h -> 0 ...
    assert errors[-1] < 1e-8 * exact.abs().max().item()  # ... to the jvp value (O(h^2))
    # and jvp is the mean of ||J u|| with the true Jacobian
    jac = jacobians(proj, x.reshape(-1, 12))  # (T, d_l, d_v)
    ref = torch.einsum("tod,md->tmo", jac, u).norm(dim=-1).mean(dim=1).reshape(2, 7)
    torch.testing.assert_close(exact, ref)


def test_jvp_draws_the_same_directions_as_central():
    proj = mlp().double()
    x = torch.randn(9, 12, dtype=torch.float64)
    got = jvp_sensitivity(x, proj, num_directions=8, generator=torch.Generator().manual_seed(5))
    ref = sensitivity(x, proj, num_directions=8, step=1e-5, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize(
    "act",
    [nn.GELU(), nn.GELU(approximate="tanh"), nn.ReLU(), nn.SiLU(), nn.Identity()],
    ids=lambda a: repr(a),
)
def test_closed_form_is_rms_of_directional_derivatives(act: nn.Module):
    proj = mlp(act=act).double()
    x = torch.randn(10, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    got = closed_form_sensitivity(x, proj)
    jac = jacobians(proj, x)
    torch.testing.assert_close(got, (jac.pow(2).sum(dim=(1, 2)) / 12).sqrt())  # ||J||_F^2 / d_v, exactly
    # Monte-Carlo sqrt(E||J u||^2) with many unit directions agrees within sampling error
    u = draw_directions(20000, 12, torch.Generator().manual_seed(4)).double()
    mc = torch.einsum("tod,md->tmo", jac, u).pow(2).sum(-1).mean(dim=1).sqrt()
    torch.testing.assert_close(got, mc, rtol=0.02, atol=0.0)


def test_closed_form_scale_relation_to_mean_norm():
    """E||J u|| <= sqrt(E||J u||^2) (Jensen): central/jvp sit slightly below closed-form, by a
    near token-independent factor (which min-max normalisation removes)."""
    proj = mlp(d_v=64, h=96, d_l=80).double()
    x = torch.randn(20, 64, dtype=torch.float64)
    u = draw_directions(2048, 64, torch.Generator().manual_seed(0)).double()
    mean_norm = jvp_sensitivity(x, proj, directions=u)  # (20,)
    rms = torch.einsum("tod,md->tmo", jacobians(proj, x), u).pow(2).sum(-1).mean(dim=1).sqrt()
    assert bool((mean_norm <= rms).all())  # Jensen on the same directions, exactly
    cf = closed_form_sensitivity(x, proj)
    torch.testing.assert_close(cf, rms, rtol=0.03, atol=0.0)
    ratio = mean_norm / cf
    assert bool((ratio > 0.95).all()) and bool((ratio < 1.02).all())
    assert ratio.std().item() < 0.01


@pytest.mark.parametrize("name", ["central", "jvp", "closed-form"])
def test_every_estimator_batched_equals_per_image_float32(name: str):
    proj = mlp()
    x = torch.randn(3, 6, 12, generator=torch.Generator().manual_seed(0))
    full = estimate_sensitivity(x, proj, name, num_directions=8, generator=torch.Generator().manual_seed(1))
    assert full.shape == (3, 6) and full.dtype == torch.float32
    for b in range(3):
        one = estimate_sensitivity(
            x[b], proj, name, num_directions=8, generator=torch.Generator().manual_seed(1)
        )
        torch.testing.assert_close(full[b], one, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["central", "jvp", "closed-form"])
@pytest.mark.parametrize("act", ["gelu", "gelu_pytorch_tanh", "quick_gelu", "silu"])
def test_estimators_on_hf_llava_projector(name: str, act: str):
    proj = hf_projector(act)
    assert mlp_structure(proj).linear_1 is proj.linear_1
    x = torch.randn(2, 5, 12, generator=torch.Generator().manual_seed(0))
    got = estimate_sensitivity(x, proj, name, num_directions=64, generator=torch.Generator().manual_seed(0))
    assert got.shape == (2, 5) and bool(torch.isfinite(got).all()) and bool((got > 0).all())
    ref_name = "closed-form" if name == "closed-form" else "jvp"  # float64 reference, same directions
    ref = estimate_sensitivity(
        x.double(), proj.double(), ref_name, num_directions=64, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(got.double(), ref, rtol=1e-3, atol=1e-6)


def test_closed_form_on_half_precision_projector_reads_float32():
    proj = mlp()
    x = torch.randn(6, 12)
    ref = closed_form_sensitivity(x, proj)
    half = closed_form_sensitivity(x.bfloat16(), mlp().bfloat16())
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, ref, rtol=0.05, atol=1e-3)


def test_kernel_is_cached_and_rebuilt_when_weights_change():
    proj = mlp()
    k1 = projector_kernel(proj)
    assert projector_kernel(proj) is k1
    with torch.no_grad():
        proj[0].weight.mul_(2.0)
    k2 = projector_kernel(proj)
    assert k2 is not k1
    torch.testing.assert_close(k2, 4.0 * k1)


def test_closed_form_rejects_other_projectors_clearly():
    with pytest.raises(ValueError, match="two-layer MLP projector.*jvp"):
        closed_form_sensitivity(torch.randn(4, 12), lambda t: t * 2)
    deep = nn.Sequential(nn.Linear(12, 8), nn.GELU(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 4))
    with pytest.raises(ValueError, match="two-layer MLP"):
        closed_form_sensitivity(torch.randn(4, 12), deep)
    with pytest.raises(ValueError, match="unsupported projector activation Tanh"):
        closed_form_sensitivity(torch.randn(4, 12), mlp(act=nn.Tanh()))
    # jvp handles any differentiable projector
    assert jvp_sensitivity(torch.randn(4, 12), deep, num_directions=4).shape == (4,)


def test_registry_names_and_errors():
    assert list_estimators() == ["central", "jvp", "closed-form"]
    assert DEFAULT_ESTIMATOR in list_estimators()
    assert get_estimator("closed_form").name == "closed-form"
    with pytest.raises(ValueError, match="unknown sensitivity estimator 'adjoint'.*central"):
        get_estimator("adjoint")


@pytest.mark.parametrize("method", ["zoo", "zoo-sensitivity"])
def test_zoo_methods_take_the_estimator_option(method: str):
    proj = mlp()
    x = torch.randn(16, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = proj(x)
    picks = {}
    for name in ["central", "jvp", "closed-form", None]:
        # num_directions only where the estimator draws directions (elsewhere it is an error)
        options = {} if name in (None, "closed-form") else {"estimator": name, "num_directions": 64}
        if name == "closed-form":
            options = {"estimator": name}
        ctx = PruneContext(
            projected=z,
            features=x,
            projector=proj,
            generator=torch.Generator().manual_seed(0),
            options=options,
        )
        sel = get_method(method)(ctx, 5)
        picks[name] = sel
    torch.testing.assert_close(picks[None].scores, picks[DEFAULT_ESTIMATOR].scores)
    torch.testing.assert_close(picks["central"].scores, picks["jvp"].scores, rtol=1e-3, atol=1e-5)
    assert picks["central"].scores.shape == (16,)
