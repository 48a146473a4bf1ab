"""``fidelity="reference"``: each method against a transcription of its reference code's selection.

Every ``ref_*`` function below is written from reading the authors' code (the file and function
named in its docstring), step by step in the reference's own shapes and dtypes, and never shares
code with the library. The library's ``fidelity="reference"`` path must keep exactly the same
tokens on shared random and CLIP-like inputs (a few outlier channels of large magnitude, as CLIP
vision features have). ``docs/fidelity.md`` points to these tests row by row.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zooprune.adapters.base import ImageTokens
from zooprune.adapters.groups import select_frames
from zooprune.adapters.in_llm_tensors import last_token_attention
from zooprune.config import PruneConfig
from zooprune.methods import PruneContext, get_method
from zooprune.methods.estimators import sensitivity
from zooprune.methods.zoo import ZooOptions
from zooprune.methods.zoo_reference import lowrank_projector, reference_sensitivity
from zooprune.pipeline import select_image

D_V, D_L = 24, 40


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_features(n: int, seed: int, d: int = D_V) -> torch.Tensor:
    return torch.randn(n, d, generator=gen(seed))


def clip_like(n: int, seed: int, d: int = D_V) -> torch.Tensor:
    """Features like CLIP's: positive offset, a few outlier channels 20-50x larger than the rest."""
    x = 0.8 + 0.5 * torch.randn(n, d, generator=gen(seed))
    x[:, 3] = 30.0 + 4.0 * torch.randn(n, generator=gen(seed + 1))
    x[:, 11] = -45.0 + 6.0 * torch.randn(n, generator=gen(seed + 2))
    return x


INPUTS = {"random": random_features, "clip-like": clip_like}


def projector(seed: int = 0, d_v: int = D_V, d_l: int = D_L) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_v, 64), nn.GELU(), nn.Linear(64, d_l)).eval()


def directions_like_the_library(m: int, d_v: int, seed: int) -> torch.Tensor:
    """The reference's ``torch.randn(m, d_v, dtype=fp16)`` is unseeded; both sides draw this one
    (float32 from the seed, rounded to fp16) so the rest can be compared exactly."""
    return torch.randn(m, d_v, generator=gen(seed), dtype=torch.float32).half()


# ============================================================================= ZOO-Prune
def ref_zoo_scores(features: torch.Tensor, proj: nn.Module, u16: torch.Tensor, h: float) -> torch.Tensor:
    """AIM-SKKU/ZOO-Prune ``LLaVA/llava/model/llava_arch.py::prepare_inputs_labels_for_multimodal``,
    the block under ``LAYER_INDEX == '0'``, on an fp16 model: every step in fp16."""
    original = features.half()  # pre_image_features[0] of the fp16 model
    n_v, d_v = original.shape
    m = u16.shape[0]
    u = u16 / (u16.norm(dim=-1, keepdim=True) + 1e-12)
    u_expanded = u.unsqueeze(1).expand(-1, n_v, -1)
    perturb_plus = original.unsqueeze(0) + h * u_expanded
    perturb_minus = original.unsqueeze(0) - h * u_expanded
    plus_flat = perturb_plus.reshape(m * n_v, d_v).unsqueeze(0).half()
    minus_flat = perturb_minus.reshape(m * n_v, d_v).unsqueeze(0).half()
    half = copy.deepcopy(proj).half()
    with torch.no_grad():
        proj_plus, proj_minus = half(plus_flat), half(minus_flat)
    d_l = proj_plus.shape[-1]
    delta = proj_plus.view(m, n_v, d_l) - proj_minus.view(m, n_v, d_l)
    coeff = delta.norm(dim=-1) / (2 * h)
    return coeff.mean(dim=0)


def ref_select_tokens_sads(vectors: torch.Tensor, importance: torch.Tensor, k: int) -> list[int]:
    """``llava_arch.py::select_tokens_sads`` (the O(k^2 N) loop as written)."""
    n_v = vectors.shape[0]
    cosine = F.cosine_similarity(vectors.unsqueeze(1), vectors.unsqueeze(0), dim=-1)
    dist = 1.0 - cosine
    if importance.max() > importance.min():
        weight = (importance - importance.min()) / (importance.max() - importance.min() + 1e-8)
    else:
        weight = torch.ones_like(importance)
    selected = torch.empty(k, dtype=torch.long)
    for i in range(k):
        if i == 0:
            scores = weight
        else:
            scores = torch.index_select(dist, 0, selected[:i]).min(dim=0).values * weight
        mask = torch.ones(n_v, dtype=torch.bool)
        if i > 0:
            mask[selected[:i]] = False
        selected[i] = torch.argmax(scores.masked_fill(~mask, float("-inf")))
    return sorted(selected.tolist())


def zoo_context(features, proj, seed=0, fidelity="reference", **options) -> PruneContext:
    method = get_method("zoo")
    opts = method.reference_parse_options(options) if fidelity == "reference" else method.parse_options(options)
    with torch.no_grad():
        projected = proj(features).half() if fidelity == "reference" else proj(features)
    return PruneContext(
        projected=projected,
        features=features,
        projector=proj,
        generator=gen(seed),
        options=opts,
        fidelity=fidelity,
    )


@pytest.mark.parametrize("kind", sorted(INPUTS))
@pytest.mark.parametrize("k", [1, 7, 20])
def test_zoo_reference_equals_the_transcription(kind, k):
    features, proj = INPUTS[kind](48, seed=3), projector(1)
    ctx = zoo_context(features, proj, seed=5)
    sel = get_method("zoo")(ctx, k)
    u16 = directions_like_the_library(64, D_V, seed=5)
    scores = ref_zoo_scores(features, proj, u16, 0.01)
    assert torch.equal(sel.scores, scores.float())  # bit for bit, fp16
    assert sel.indices.tolist() == ref_select_tokens_sads(ctx.projected, scores, k)
    assert sel.estimator == "central-fp16"


def test_zoo_reference_defaults_are_the_papers_estimator():
    config = PruneConfig(method="zoo", fidelity="reference")
    assert (config.options.estimator, config.options.num_directions, config.options.step) == ("central", 64, 0.01)
    assert PruneConfig(method="zoo", fidelity="reference", options={"num_directions": 16}).options.num_directions == 16
    with pytest.raises(ValueError, match="fidelity='reference' uses estimator='central'"):
        PruneConfig(method="zoo", fidelity="reference", options={"estimator": "jvp"})


def test_fp16_reference_reproduces_the_rounding_of_the_perturbation():
    """Many of the h*u components (~3e-4 for d_v = 1024) vanish next to features of size ~1 in fp16
    (spacing 2^-11 .. 2^-10 ~ 5e-4 .. 1e-3): the reference's central difference sees a truncated
    direction (here 50-75 % of the components, depending on the feature magnitudes)."""
    x = (0.5 + torch.rand(64, 1024, generator=gen(0))).half()
    u = directions_like_the_library(8, 1024, seed=1)
    u = u / (u.norm(dim=-1, keepdim=True) + 1e-12)
    unchanged = ((x.unsqueeze(0) + 0.01 * u.unsqueeze(1)) == x.unsqueeze(0)).float().mean().item()
    assert 0.4 < unchanged < 0.9
    # ... and the library's reference scores are exactly those of that truncated difference,
    # while float32 central differences with the same directions differ from them.
    features, proj = clip_like(96, seed=4), projector(2)
    ref = reference_sensitivity(features, proj, num_directions=64, step=0.01, generator=gen(7))
    assert ref.dtype == torch.float16
    assert torch.equal(ref, ref_zoo_scores(features, proj, directions_like_the_library(64, D_V, 7), 0.01))
    fp32 = sensitivity(features, proj, num_directions=64, step=0.01, generator=gen(7))
    assert not torch.allclose(ref.float(), fp32, rtol=1e-3)
    improved = get_method("zoo")(zoo_context(features, proj, 7, fidelity="improved", estimator="central"), 16)
    reference = get_method("zoo")(zoo_context(features, proj, 7), 16)
    assert improved.indices.tolist() != reference.indices.tolist()


def test_reference_budget_rules():
    zoo, divprune = get_method("zoo"), get_method("divprune")
    assert [zoo.reference_budget(r, 576) for r in (0.3334, 0.2223, 0.1112)] == [192, 128, 64]
    assert (zoo.reference_budget(0.3, 16), divprune.reference_budget(0.3, 16)) == (4, 5)  # int vs round
    assert divprune.reference_budget(0.5, 9) == 4  # Python's round: 4.5 -> 4 (half to even)
    assert zoo.reference_budget(40, 16) == 16


# ---- LLaVA-NeXT: per-crop budget, one bank of directions, the newline offset -------------------
def next_layout(base: int = 16, rows: int = 4, cols: int = 6, crops: int = 2):
    """Packed LLaVA-NeXT order: base crop tokens, then per high-res row its tokens and a newline;
    the high-res columns are split evenly over ``crops`` crops side by side."""
    labels = [0] * base  # frame label per packed position; -9999 = newline (as the reference)
    for _ in range(rows):
        labels += [1 + (c * crops) // cols for c in range(cols)] + [-9999]
    return torch.tensor(labels)


def ref_next_zoo(projected, scores, labels, ratio, max_tokens=2880):
    """``llava_arch_llava_next_7b.py``: the ``LAYER_INDEX == '0'`` block and
    ``select_tokens_sads_multi_frames`` (per-frame SADS with ``pairwise_cosine_similarity``)."""
    inf_indices = (labels[(labels != 0).nonzero().flatten()[0] :] == -9999).nonzero().flatten()  # within high-res
    frames = len(torch.unique(labels)) - 1
    target = int(max_tokens * ratio)
    k_frame = int(target / frames)
    picks = []
    for f in torch.unique(labels[labels != -9999]).tolist():
        mask = labels == f
        v, s = projected[mask], scores[mask]
        unit = v / v.norm(dim=1, keepdim=True)
        dist = 1.0 - torch.mm(unit, unit.t())
        weight = (s - s.min()) / (s.max() - s.min() + 1e-8)
        selected = torch.empty(k_frame, dtype=torch.long)
        for i in range(k_frame):
            score = weight if i == 0 else torch.index_select(dist, 0, selected[:i]).min(dim=0).values * weight
            valid = torch.ones(v.shape[0], dtype=torch.bool)
            if i > 0:
                valid[selected[:i]] = False
            selected[i] = torch.argmax(score.masked_fill(~valid, float("-inf")))
        picks.append(mask.nonzero(as_tuple=True)[0][selected])
    return torch.unique(torch.cat([*picks, inf_indices])).tolist()


@pytest.mark.parametrize("kind", sorted(INPUTS))
def test_zoo_next_reference_crops_equal_the_transcription(kind):
    labels = next_layout()
    n = labels.numel()
    features, proj = INPUTS[kind](n, seed=8), projector(3)
    features[labels == -9999] = 0.0  # newlines have no feature
    ctx = zoo_context(features, proj, seed=2)
    groups = [(labels == f).nonzero().flatten() for f in (0, 1, 2)]
    newlines = (labels == -9999).nonzero().flatten()
    ratio, max_tokens = 0.3, 48  # tiny image: 3 frames x 16
    sel = select_frames(get_method("zoo"), ctx, groups, newlines, ratio, max_tokens)
    # the reference scores every crop with one bank in one call: the token-wise projector makes
    # that the per-token scores of one call over all tokens
    scores = ref_zoo_scores(features, proj, directions_like_the_library(64, D_V, 2), 0.01)
    expected = ref_next_zoo(ctx.projected, scores, labels, ratio, max_tokens)
    assert sel.indices.tolist() == expected
    assert not set(newlines.tolist()) <= set(sel.indices.tolist())  # the offset drops real newlines


def test_lowrank_projector_trained_and_as_constructed():
    proj = projector(4)
    full = lowrank_projector(proj, 64)  # rank >= every width: exact factorisation
    x = random_features(10, 1)
    with torch.no_grad():
        assert torch.allclose(full(x), proj(x), atol=1e-5)
        low = lowrank_projector(proj, 4)
        assert not torch.allclose(low(x), proj(x), atol=1e-3)
        built = lowrank_projector(proj, 4, "as-constructed", seed=0)
        assert torch.allclose(built[1].bias, torch.zeros(64)) and torch.allclose(built[4].bias, torch.zeros(D_L))
        assert lowrank_projector(proj, 4, "as-constructed", seed=0) is built  # cached
    sel = get_method("zoo")(zoo_context(x, proj, projector_rank=4), 3)
    assert sel.estimator == "central-fp16@rank-4"
    with pytest.raises(ValueError, match="'lowrank' of method 'zoo' is ignored"):
        PruneConfig(method="zoo", options={"lowrank": "as-constructed"})


# ============================================================================= DivPrune
def ref_divprune(vectors: torch.Tensor, ratio: float) -> list[int]:
    """vbdi/divprune ``DivPrune`` (and its copy in ZOO-Prune's ``llava_arch_llava_next_7b.py``), in
    the vectors' own dtype: k = int(round(r * N)), ``pairwise_cosine_similarity``, first pick from
    the second-smallest column entry, then the largest minimum distance to the picked rows."""
    terms = int(round(ratio * vectors.shape[0]))
    norm = vectors / vectors.norm(dim=1, keepdim=True)
    cosine_matrix = 1.0 - torch.mm(norm, norm.t())
    s = torch.empty(terms, dtype=torch.long)
    for i in range(terms):
        if i == 0:
            scores = torch.topk(cosine_matrix, 2, dim=0, largest=False).values[1, :]
        else:
            m2 = torch.index_select(cosine_matrix, 0, torch.index_select(s, 0, torch.arange(0, i)))
            scores = torch.min(m2, dim=0).values
        s[i] = torch.argmax(scores)
    return sorted(s.tolist())


@pytest.mark.parametrize("kind", sorted(INPUTS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("ratio", [0.05, 0.25, 0.5])
def test_divprune_reference_equals_the_transcription(kind, dtype, ratio):
    z = INPUTS[kind](60, seed=9, d=D_L).to(dtype)
    method = get_method("divprune")
    k = method.reference_budget(ratio, 60)
    sel = method(PruneContext(projected=z, fidelity="reference"), k)
    assert sel.indices.tolist() == ref_divprune(z, ratio)


def test_divprune_reference_pools_the_packed_sequence_newlines_included():
    labels = next_layout()
    n = labels.numel()
    z = clip_like(n, seed=10, d=D_L)
    groups = [(labels == f).nonzero().flatten() for f in (0, 1, 2)]
    image = ImageTokens(projected=z, groups=groups, always_keep=(labels == -9999).nonzero().flatten())
    config = PruneConfig(method="divprune", keep=0.25, fidelity="reference")
    sel = select_image(config.spec, config, image, PruneContext(projected=z, fidelity="reference"))
    assert sel.indices.tolist() == ref_divprune(z, 0.25)  # k = round(0.25 * 40) over every token


# ============================================================================= VisionZip
def ref_visionzip(hidden, attn_sum, metric, dominant, contextual):
    """dvlab-research/VisionZip ``visionzip/utils.py::CLIPVisionTower_forward`` on one image, with the
    reference's LLaVA-1.5 call passing ``dominant - 1``: ``hidden`` ``(1 + N, d)`` with [CLS] first,
    ``attn_sum`` ``(N,)`` [CLS] attention summed over heads, ``metric`` ``(1 + N, d_h)`` head-mean keys."""
    dominant_num = dominant - 1
    topk = attn_sum.topk(dominant_num).indices + 1
    all_indices = torch.cat([torch.zeros(1, dtype=topk.dtype), topk])
    mask = torch.ones(hidden.shape[0], dtype=torch.bool).scatter_(0, all_indices, False)
    dominant_tokens = hidden[~mask]
    metric_filtered = metric[mask]
    hidden_filtered = hidden[mask]
    metric_normalized = metric_filtered / metric_filtered.norm(dim=-1, keepdim=True)
    step = max(1, metric_normalized.shape[0] // contextual)
    target_indices = torch.arange(0, metric_normalized.shape[0], step)[:contextual]
    others = ~torch.isin(torch.arange(metric_normalized.shape[0]), target_indices)
    similarity = metric_normalized[others] @ metric_normalized[target_indices].T
    assign = torch.zeros(int(others.sum()), contextual).scatter_(1, similarity.argmax(dim=1, keepdim=True), 1)
    counts = assign.sum(dim=0).clamp(min=1).unsqueeze(-1)
    aggregated = assign.T @ hidden_filtered[others] / counts
    contextual_tokens = hidden_filtered[target_indices] + aggregated
    return torch.cat([dominant_tokens, contextual_tokens]), (topk - 1).sort().values


@pytest.mark.parametrize("kind", sorted(INPUTS))
@pytest.mark.parametrize(("k", "split"), [(64, (54, 10)), (20, (17, 3))])
def test_visionzip_reference_keeps_cls_and_equals_the_transcription(kind, k, split):
    n, heads, d_h = 144, 2, 6
    hidden = INPUTS[kind](1 + n, seed=11)  # [CLS] + patches, the vision layer LLaVA reads
    attn = torch.rand(heads, n, generator=gen(12))
    keys = torch.randn(1 + n, heads, d_h, generator=gen(13))
    proj = projector(5)
    with torch.no_grad():
        ctx = PruneContext(
            projected=proj(hidden[1:]),
            features=hidden[1:],
            projector=proj,
            cls_attention=attn.mean(dim=0),
            keys=keys[1:],
            cls_feature=hidden[0],
            fidelity="reference",
            options=get_method("visionzip").reference_parse_options(None),
        )
        sel = get_method("visionzip")(ctx, k)
        tokens, patches = ref_visionzip(hidden, attn.sum(dim=0), keys.mean(dim=1), *split)
        expected = proj(tokens)
    assert sel.indices.tolist() == patches.tolist() and len(patches) == split[0] - 1
    assert sel.tokens.shape[0] == k
    assert torch.allclose(sel.tokens, expected, atol=1e-5)


# ============================================================================= DART
def ref_dart(last_layer_state, k_states, start, length, max_num, pivot_image=4, pivot_text=4):
    """ZichenWen1/DART ``get_retained_image_token``: ``last_layer_state`` ``(1, L, d)`` (final-normed),
    ``k_states`` ``(1, H, L, d_h)``; positions absolute; returns the kept absolute positions."""
    topk_per = int(max_num // (pivot_image + pivot_text))
    k_states = k_states.permute(0, 2, 1, 3).reshape(k_states.shape[0], k_states.shape[2], -1)
    k_image = k_states[0][start : start + length, :]
    k_query = k_states[0][start + length :, :]
    image_indices = (torch.norm(k_image, p=1, dim=-1).topk(pivot_image).indices + start).tolist()
    query_indices = (torch.norm(k_query, p=1, dim=-1).topk(pivot_text).indices + start + length).tolist()
    indices_set = set(image_indices + query_indices)
    tmp_set = indices_set.copy()
    valid_indices = set(range(start, start + length))
    valid_indices.difference_update(image_indices)
    for item in list(tmp_set):
        valid_list = list(valid_indices)
        valid_vectors = last_layer_state[0][valid_list, :]
        cos_sim = -F.cosine_similarity(last_layer_state[0][item, :], valid_vectors, dim=-1)
        top = cos_sim.topk(topk_per).indices
        real = [valid_list[i] for i in top.tolist()]
        indices_set.update(real)
        valid_indices.difference_update(real)
    indices_set.difference_update(query_indices)
    return sorted(indices_set)


@pytest.mark.parametrize("kind", sorted(INPUTS))
@pytest.mark.parametrize(("start", "k"), [(35, 16), (35, 37), (5, 64), (200, 40)])
def test_dart_reference_equals_the_transcription(kind, start, k):
    n, t, heads, d_h, d = 144, 9, 2, 8, 32
    length = start + n + t
    hidden = INPUTS[kind](length, seed=14, d=d)[None]  # (1, L, d)
    keys = torch.randn(1, heads, length, d_h, generator=gen(15))
    flat = keys.permute(0, 2, 1, 3).reshape(length, heads * d_h)
    ctx = PruneContext(
        projected=hidden[0, start : start + n],
        llm_hidden=hidden[0, start : start + n],
        llm_keys=flat[start : start + n],
        llm_query_hidden=hidden[0, start + n :],
        llm_query_keys=flat[start + n :],
        fidelity="reference",
        llm_image_start=None if start == 35 else start,
        options=get_method("dart").parse_options(None),
    )
    sel = get_method("dart")(ctx, k)
    expected = [p - start for p in ref_dart(hidden, keys, start, n, k)]
    assert sel.indices.tolist() == expected
    assert len(expected) == 4 + 8 * (k // 8)  # the reference's count, not k


# ============================================================================= FastV
def ref_fastv(query_states, key_states, sys_length, image_token_length, attention_rank):
    """pkunlp-icler/FastV ``modeling_llama.py``: ``LlamaAttention.forward``'s weights at layer K-1
    (``output_attentions=True``, no cache, batch 1) and the ``use_fast_v`` branch of
    ``LlamaModel.forward`` at ``idx == AGG_LAYER``. ``query_states`` / ``key_states``: ``(1, H, L, d_h)``
    post-RoPE, in the model's dtype. Returns the kept absolute positions (unsorted, as topk gives)."""
    bsz, heads, length, head_dim = query_states.shape
    attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) / math.sqrt(head_dim)
    # _make_causal_mask: finfo.min above the diagonal, 0 elsewhere, added to the weights
    mask = torch.full((length, length), torch.finfo(query_states.dtype).min)
    cond = torch.arange(length)
    mask.masked_fill_(cond < (cond + 1).view(length, 1), 0)
    attn_weights = attn_weights + mask.to(query_states.dtype)[None, None]
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query_states.dtype)
    last_layer_attention_avg = torch.mean(attn_weights, dim=1)[0]
    last_layer_attention_avg_last_tok = last_layer_attention_avg[-1]
    image_part = last_layer_attention_avg_last_tok[sys_length : sys_length + image_token_length]
    return image_part.topk(attention_rank).indices + sys_length


@pytest.mark.parametrize("kind", ["peaked", "near-ties"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(("start", "k"), [(35, 16), (35, 72), (5, 37), (60, 1)])
def test_fastv_reference_equals_the_transcription(kind, dtype, start, k):
    """The library's reference attention (``last_token_attention(model_dtype=True)``, what the in-LLM
    plan hands ``fastv``) and selection keep what the reference's rule keeps. ``near-ties``: image keys
    that differ below fp16's resolution, so the fp16 weights tie where float32 ones would not."""
    n, t, heads, d_h = 144, 11, 4, 16
    length = start + n + t
    q = (3.0 * torch.randn(1, heads, length, d_h, generator=gen(21))).to(dtype)  # peaked, as a trained model's
    keys = torch.randn(1, heads, length, d_h, generator=gen(22))
    if kind == "near-ties":
        keys[0, :, start : start + n] = keys[0, :, start : start + 1] + 1e-4 * keys[0, :, start : start + n]
    keys = keys.to(dtype)
    keys[0, :, start + 7] *= 4  # a dominant image token
    attention = last_token_attention(q[:, :, -1:], keys, torch.ones(1, length, dtype=torch.bool), model_dtype=True)
    assert attention.dtype == dtype
    ctx = PruneContext(
        projected=torch.zeros(n, 8),
        llm_attention=attention[0, start : start + n],
        fidelity="reference",
        options=get_method("fastv").parse_options(None),
    )
    sel = get_method("fastv")(ctx, k)
    expected = sorted((ref_fastv(q, keys, start, n, k) - start).tolist())
    assert sel.indices.tolist() == expected


# ============================================================================= unsupported
@pytest.mark.parametrize(
    ("method", "why"),
    [
        ("cdpruner", "CLIP text tower"),
        ("random", "no reference implementation"),
        ("pool", "no reference implementation"),
        ("zoo-sensitivity", "no sensitivity-only path"),
    ],
)
def test_methods_without_reference_fidelity_say_why(method, why):
    assert not get_method(method).supports_reference
    with pytest.raises(ValueError, match=f"method '{method}' has no fidelity='reference': .*{why}"):
        PruneConfig(method=method, fidelity="reference")


def test_fidelity_is_validated_and_improved_is_the_default():
    assert PruneConfig().fidelity == "improved"
    with pytest.raises(ValueError, match="fidelity must be one of"):
        PruneConfig(fidelity="exact")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="budget='whole' is not a reference setting"):
        PruneConfig(method="zoo", budget="whole", fidelity="reference")
    supported = {m for m in ("zoo", "divprune", "visionzip", "dart", "fastv", "none") if get_method(m).supports_reference}
    assert supported == {"zoo", "divprune", "visionzip", "dart", "fastv", "none"}
    assert isinstance(PruneConfig(method="zoo", fidelity="reference").options, ZooOptions)
