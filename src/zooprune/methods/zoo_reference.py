"""ZOO-Prune's reference fidelity: the authors' fp16 central difference and their rank-r projector.

``fidelity="reference"`` scores as AIM-SKKU/ZOO-Prune does (``LLaVA/llava/model/llava_arch.py``):
the central difference of :func:`zooprune.methods.estimators.sensitivity` run through an fp16
projector, optionally the rank-r factorised projector the NeXT reference builds (see
docs/fidelity.md). The library's own estimators are in ``estimators.py``.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..tensors import check_finite
from .estimators import CHUNK_ELEMENTS, Projector, mlp_structure

#: projector module -> {(dtype or rank/weights key): derived module}; entries go away with the module.
_DERIVED: weakref.WeakKeyDictionary[nn.Module, dict[tuple, nn.Module]] = weakref.WeakKeyDictionary()


def _derived(projector: nn.Module, key: tuple, build: Callable[[], nn.Module]) -> nn.Module:
    """A module derived from ``projector`` (a half copy, a low-rank factorisation), built once per key."""
    cache = _DERIVED.setdefault(projector, {})
    if key not in cache:
        cache[key] = build().eval()
    return cache[key]


@torch.no_grad()
def half_projector(projector: Projector) -> Projector:
    """``projector`` computing in float16 (a cached fp16 copy of an ``nn.Module``), as the reference
    runs its fp16 model's ``mm_projector``."""
    if not isinstance(projector, nn.Module):
        return lambda x: projector(x.float()).half()
    if all(p.dtype == torch.float16 for p in projector.parameters()):
        return projector
    return _derived(projector, ("half",), lambda: copy.deepcopy(projector).half())


@torch.no_grad()
def lowrank_projector(projector: nn.Module, rank: int, weights: str = "trained", seed: int = 0) -> nn.Module:
    """The reference's rank-r projector for LLaVA-NeXT (AIM-SKKU/ZOO-Prune,
    ``LLaVA/llava/model/language_model/llava_llama.py::LlavaLlamaForCausalLM.__init__``):
    ``Sequential(Linear(d_v, r, no bias), Linear(r, h) + b1, GELU, Linear(h, r, no bias), Linear(r, d_l) + b2)``
    from a truncated SVD of each linear layer (W ~ U_r diag(S_r) V_r^T).

    ``weights="trained"``: the SVD of this projector's weights (what the paper describes: a
    low-rank projector of the trained model). ``weights="as-constructed"``: what the reference code
    computes: it factorises ``mm_projector`` inside the model's constructor, before
    ``from_pretrained`` loads the checkpoint, so it factorises freshly initialised weights
    (``LlamaPreTrainedModel._init_weights``: N(0, 0.02^2), zero bias); the factors are not in the
    checkpoint and keep those values. Here that initialisation is drawn from ``seed`` (the
    reference's draw depends on the process's RNG state, or on uninitialised memory under
    ``low_cpu_mem_usage``, and cannot be reproduced bit for bit).
    """
    mlp = mlp_structure(projector)
    if weights not in ("trained", "as-constructed"):
        raise ValueError(f"lowrank weights must be 'trained' or 'as-constructed', got {weights!r}")

    def build() -> nn.Module:
        w1, w2 = mlp.linear_1.weight.float(), mlp.linear_2.weight.float()
        b1 = torch.zeros(w1.shape[0]) if mlp.linear_1.bias is None else mlp.linear_1.bias.float()
        b2 = torch.zeros(w2.shape[0]) if mlp.linear_2.bias is None else mlp.linear_2.bias.float()
        if weights == "as-constructed":
            g = torch.Generator().manual_seed(seed)
            w1 = torch.randn(w1.shape, generator=g) * 0.02
            w2 = torch.randn(w2.shape, generator=g) * 0.02
            b1, b2 = torch.zeros_like(b1), torch.zeros_like(b2)
        layers: list[nn.Module] = []
        for w, b in ((w1, b1), (w2, b2)):
            u, s, vh = torch.linalg.svd(w, full_matrices=False)
            r = min(rank, s.numel())
            down = nn.Linear(w.shape[1], r, bias=False)
            up = nn.Linear(r, w.shape[0], bias=True)
            down.weight.copy_(vh[:r])  # (r, in)
            up.weight.copy_(u[:, :r] * s[:r])  # (out, r) = U_r diag(S_r)
            up.bias.copy_(b)
            layers += [down, up]
        return nn.Sequential(layers[0], layers[1], nn.GELU(), layers[2], layers[3])

    return _derived(projector, ("lowrank", rank, weights, seed), build)


@torch.no_grad()
def reference_sensitivity(
    features: Tensor,
    projector: Projector,
    *,
    num_directions: int = 64,
    step: float = 0.01,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """The paper's central difference computed as the reference code computes it: in float16.

    AIM-SKKU/ZOO-Prune ``LLaVA/llava/model/llava_arch.py::prepare_inputs_labels_for_multimodal``
    (scoring block) and ``llava_arch_llava_next_7b.py::zoo_prune_get_sensitivity``: directions
    ``u = randn(m, d_v)`` in the model dtype (fp16), ``u / (||u|| + 1e-12)``; ``x +- h u`` in fp16
    (about half of the ``h u`` components, ~3e-4, are below fp16's resolution near the feature
    values and change nothing); the fp16 projector; ``||M(x+) - M(x-)|| / 2h`` and the mean over
    directions in fp16. One bank of directions for every token. The directions come from
    ``generator`` (drawn in float32, rounded to fp16; the reference's ``torch.randn`` is unseeded).

    Args:
        features: ``(N, d_v)`` pre-projector features (rounded to fp16).
        projector: token-wise projector (run as an fp16 copy).
        chunk_size: directions per projector call (memory only: each direction's norms are
            computed alone, as in the reference's one big call).

    Returns:
        ``(N,)`` float16 sensitivities.
    """
    if features.dim() != 2:
        raise ValueError(f"features must be (N, d_v), got shape {tuple(features.shape)}")
    check_finite("features", features)
    x = features.half()  # (N, d_v)
    n, d_v = x.shape
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    u = torch.randn(num_directions, d_v, generator=generator, dtype=torch.float32).half().to(x.device)
    u = u / (u.norm(dim=-1, keepdim=True) + 1e-12)  # (m, d_v) fp16
    proj = half_projector(projector)
    if chunk_size is None:
        d_l = proj(x[:1]).shape[-1]
        chunk_size = max(1, CHUNK_ELEMENTS // (n * (d_v + d_l)))
    coeffs = []
    for start in range(0, num_directions, chunk_size):
        hu = step * u[start : start + chunk_size, None, :]  # (c, 1, d_v) fp16
        plus = proj(x.unsqueeze(0) + hu)  # (c, N, d_l) fp16
        minus = proj(x.unsqueeze(0) - hu)
        coeffs.append((plus - minus).norm(dim=-1) / (2 * step))  # (c, N) fp16
    return torch.cat(coeffs).mean(dim=0)  # (N,) fp16
