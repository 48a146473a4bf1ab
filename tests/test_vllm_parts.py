"""The vLLM plugin's parts that need no engine: settings resolution, the wire format, the placeholder
count, the question ids, [CLS] attention and the float32 projector copy (runs where vLLM is installed)."""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from zooprune.config import PruneConfig  # noqa: E402
from zooprune.methods import METHODS, PruneContext  # noqa: E402
from zooprune.vllm.budget import planned_tokens  # noqa: E402
from zooprune.vllm.request import UNPRUNED, decode, encode, from_wire, resolve, to_wire  # noqa: E402


def test_no_setting_means_stock():
    assert resolve(None, None) == UNPRUNED
    assert resolve({}, {}) == UNPRUNED


def test_request_overrides_the_deployment_default():
    default = {"method": "zoo", "keep": 64, "estimator": "central", "num_directions": 16}
    same = resolve(default, {"keep": "25%"})
    assert (same.method, same.keep, same.options.estimator, same.options.num_directions) == ("zoo", 0.25, "central", 16)
    other = resolve(default, {"method": "divprune", "keep": 32})  # another method: its own defaults
    assert (other.method, other.keep) == ("divprune", 32)
    only_request = resolve(None, {"keep": 8})  # PruneConfig's defaults fill the rest
    assert (only_request.method, only_request.keep) == ("zoo", 8)
    nested = resolve(None, {"method": "zoo", "options": {"estimator": "jvp"}})
    assert nested.options.estimator == "jvp"


@pytest.mark.parametrize(
    "request_settings, error",
    [({"method": "nope"}, KeyError), ({"keep": -1}, ValueError), ({"seed": "x"}, TypeError), ("zoo", TypeError)],
)
def test_bad_settings_raise(request_settings, error):
    with pytest.raises(error):
        resolve(None, request_settings)


@pytest.mark.parametrize("name", sorted(n for n, m in METHODS.items() if not m.in_llm))
def test_wire_round_trip(name):
    config = PruneConfig(method=name, keep=0.111, seed=5)
    wire = to_wire(config, [7, 8, 9])
    back, ids = from_wire(decode(encode(wire)))
    assert back == config and ids == [7, 8, 9]
    assert encode(wire).dtype == torch.uint8


def full_context(n: int, grid: tuple[int, int], seed: int) -> PruneContext:
    g = torch.Generator().manual_seed(seed)
    proj = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 12))
    feats = torch.randn(n, 8, generator=g)
    return PruneContext(
        projected=proj(feats).detach(),
        features=feats,
        projector=proj,
        grid=grid,
        cls_attention=torch.rand(n, generator=g).softmax(0),
        keys=torch.randn(n, 2, 4, generator=g),
        instruction=torch.randn(5, 12, generator=g),
        generator=torch.Generator().manual_seed(seed),
    )


@pytest.mark.parametrize("name", sorted(n for n, m in METHODS.items() if not m.in_llm))
@pytest.mark.parametrize("keep", [1, 7, 31, 0.25, 0.5, 400])
def test_planned_count_is_what_the_method_returns(name, keep):
    """The processor's placeholder count (decided before encoding) equals the tokens the method
    returns on real inputs, for selecting and merging methods alike."""
    from zooprune.adapters.base import ImageTokens
    from zooprune.pipeline import select_image

    n, grid = 196, (14, 14)
    config = PruneConfig(method=name, keep=keep)
    ctx = full_context(n, grid, seed=1)
    image = ImageTokens(projected=ctx.projected, features=ctx.features, grid=grid)
    sel = select_image(config.spec, config, image, ctx)
    got = sel.tokens.shape[0] if sel.tokens is not None else sel.indices.numel()
    assert planned_tokens(config, n, grid) == got


def test_question_ids_follow_the_last_image():
    from zooprune.vllm.processor import question_ids

    assert question_ids([1, 5, 4, 9, 10, 11], image_token_id=4) == [9, 10, 11]
    assert question_ids([1, 4, 6, 4, 12], image_token_id=4) == [12]
    assert question_ids([1, 9, 4], image_token_id=4) == [1, 9]  # image last: every text token


def test_cls_attention_equals_a_per_head_loop():
    """The [CLS] attention both engines use (adapters.llava.cls_attention) against a naive loop."""
    from zooprune.adapters.llava import cls_attention

    heads, d_h, n = 3, 4, 16
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 1 + n, heads * d_h, generator=g), torch.randn(2, 1 + n, heads * d_h, generator=g)
    attn, keys = cls_attention(q, k, heads)
    for i in range(2):
        rows = []
        for h in range(heads):
            qh, kh = q[i, 0, h * d_h : (h + 1) * d_h], k[i, :, h * d_h : (h + 1) * d_h]
            rows.append(torch.softmax(kh @ qh / d_h**0.5, dim=0))
        naive = torch.stack(rows).mean(dim=0)[1:]
        assert torch.allclose(attn[i], naive, atol=1e-6)
        assert torch.equal(keys[i, :, 1], k[i, 1:, d_h : 2 * d_h])


def test_float32_projector_is_the_hf_projector(tiny_llava):
    """The scoring copy rebuilt from a vLLM-shaped projector (linear_1 / act / linear_2, TP=1)
    computes the HF projector's function, and the closed-form estimator accepts it."""
    from zooprune.methods.estimators import mlp_structure
    from zooprune.vllm.projector import float32_llava_projector

    model, _ = tiny_llava
    hf = model.model.multi_modal_projector.float()
    vllm_like = nn.Module()
    vllm_like.linear_1, vllm_like.linear_2 = hf.linear_1, hf.linear_2
    copy = float32_llava_projector(vllm_like, model.config)
    x = torch.randn(5, hf.linear_1.in_features, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(copy(x), hf(x), atol=1e-6)
    mlp_structure(copy)  # raises if the closed form could not read it
    assert all(p.dtype == torch.float32 for p in copy.parameters())
