"""Sensitivity estimators for ZOO-Prune, selectable by name (pure torch, no transformers).

Every estimator maps pre-projector features ``(N, d_v)`` or ``(B, N, d_v)`` to un-normalised
per-token sensitivities ``(N,)`` / ``(B, N)`` in float32 (float64 for float64 features with a
float64 projector) on the scale of the paper's S(i) = E_u ||J_i u||_2, u uniform on the unit
sphere of R^{d_v}, J_i the projector's Jacobian at token i (paper Eqs. 1-4):

``central``
    The paper's estimator (reference): (1/m) sum_j ||M(x + h u_j) - M(x - h u_j)|| / 2h.
    2 m projector passes; truncation error O(h^2); float32 rounding ~eps/h.
``jvp``
    The same m directions, J_i u_j computed exactly by forward-mode AD (``torch.func.jvp``):
    no step size, one tangent pass per direction (about half the cost of ``central``). With
    the same directions it is the h -> 0 limit of ``central``.
``closed-form``
    For two-layer MLP projectors M(x) = W2 act(W1 x + b1) + b2 (LLaVA-1.5 and most LLaVA-style
    models): J_i = W2 diag(g_i) W1 with g_i = act'(W1 x_i + b1), so
    ||J_i||_F^2 = g_i^T K g_i with K = (W2^T W2) * (W1 W1^T) (elementwise), K cached per
    projector. Returns sqrt(g_i^T K g_i / d_v) = sqrt(E_u ||J_i u||^2) exactly
    (E[u u^T] = I / d_v for u uniform on the sphere): no directions, no sampling noise, about
    the cost of one projector pass.

Scale relation. ``central`` and ``jvp`` estimate E||J u|| (mean of norms); ``closed-form``
gives the root mean square sqrt(E||J u||^2). By Jensen, E||J u|| <= sqrt(E||J u||^2), with
equality iff ||J u|| does not depend on u. For d_v-dimensional u and a Jacobian whose squared
singular values s_k^2 are spread over many directions, ||J u||^2 = sum_k s_k^2 (v_k . u)^2
concentrates and the ratio is 1 - O(Var / (8 mean^2)) = 1 - O(1 / effective rank); on
LLaVA-1.5-shaped projectors it is within about 1 % of 1 and near-constant over tokens (see
``benchmarks/estimator_study.py``). SADS only uses min-max normalised scores (paper Eq. 4), so
a token-independent factor does not change which tokens are kept.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..tensors import check_finite, float32_projector

Projector = Callable[[Tensor], Tensor]


# ---------------------------------------------------------------------------------------------
# central: the paper's estimator
# ---------------------------------------------------------------------------------------------
#: Elements (B * chunk * N * (d_v + d_l)) one perturbation chunk may hold; ~64 MiB in float32.
CHUNK_ELEMENTS = 1 << 24


def draw_directions(
    num_directions: int,
    dim: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """``(m, d_v)`` unit-norm Gaussian directions (paper Eq. 2), drawn on the CPU from ``generator``.

    With ``generator=None`` a fresh generator seeded with 0 is used, so the draw is deterministic.
    """
    if num_directions < 1:
        raise ValueError(f"num_directions must be >= 1, got {num_directions}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    u = torch.randn(num_directions, dim, generator=generator, dtype=torch.float32)
    return (u / u.norm(dim=-1, keepdim=True)).to(device)


@torch.no_grad()
def sensitivity(
    features: Tensor,
    projector: Callable[[Tensor], Tensor],
    *,
    num_directions: int = 64,
    step: float = 0.01,
    generator: torch.Generator | None = None,
    directions: Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """Zeroth-order sensitivity S of each token through the projector (paper Eqs. 1-4, un-normalised).

    S(i) = (1/m) * sum_j || (M(x_i + h u_j) - M(x_i - h u_j)) / (2h) ||_2, with one bank of m
    unit directions shared by every token (and every image of a batch).

    Args:
        features: ``(N, d_v)`` or ``(B, N, d_v)`` pre-projector features.
        projector: callable ``(..., d_v) -> (..., d_l)``, token-wise. An ``nn.Module`` with
            half-precision weights (bf16 / fp16) is run as a float32 copy.
        num_directions: m, the number of random directions (paper default 64).
        step: h, the finite-difference step (paper default 0.01).
        generator: CPU generator the directions are drawn from (a fresh one seeded 0 if None).
        directions: ``(m, d_v)`` directions to use as they are (assumed unit norm) instead of drawing.
        chunk_size: directions per projector call. Peak extra memory is about
            ``4 * B * chunk_size * N * (2 d_v + 2 d_l + d_hidden)`` bytes; by default chunk_size is
            the largest value with ``B * chunk_size * N * (d_v + d_l) <= 2**24``.

    Returns:
        ``(N,)`` or ``(B, N)`` sensitivities (higher = more sensitive), float32 (float64 for
        float64 features with a float64 projector: used to check convergence to ``E||J u||``).
    """
    if features.dim() not in (2, 3):
        raise ValueError(f"features must be (N, d_v) or (B, N, d_v), got shape {tuple(features.shape)}")
    if step <= 0:
        raise ValueError(f"step must be > 0, got {step}")
    check_finite("features", features)
    batched = features.dim() == 3
    work = torch.float64 if features.dtype == torch.float64 else torch.float32  # never below float32
    x = (features if batched else features.unsqueeze(0)).to(work)  # (B, N, d_v)
    bsz, n, d_v = x.shape
    if directions is None:
        directions = draw_directions(num_directions, d_v, generator, x.device)
    elif directions.dim() != 2 or directions.shape[1] != d_v:
        raise ValueError(f"directions must be (m, {d_v}), got shape {tuple(directions.shape)}")
    u = directions.to(device=x.device, dtype=work)  # (m, d_v)
    m = u.shape[0]
    proj = float32_projector(projector)

    if chunk_size is None:
        d_l = proj(x[:1, :1]).shape[-1]
        chunk_size = max(1, CHUNK_ELEMENTS // (bsz * n * (d_v + d_l)))
    total = torch.zeros(bsz, n, dtype=work, device=x.device)
    for start in range(0, m, chunk_size):
        hu = step * u[start : start + chunk_size, None, None, :]  # (c, 1, 1, d_v)
        plus = proj(x.unsqueeze(0) + hu)  # (c, B, N, d_l)
        minus = proj(x.unsqueeze(0) - hu)  # (c, B, N, d_l)
        total += ((plus - minus).to(work) / (2.0 * step)).norm(dim=-1).sum(dim=0)  # (B, N)
    scores = total / m
    return scores if batched else scores[0]


#: The paper's estimator by its estimator name.
central_sensitivity = sensitivity


# ---------------------------------------------------------------------------------------------
# jvp: exact directional derivatives with the same directions
# ---------------------------------------------------------------------------------------------
def _as_batch(features: Tensor) -> tuple[Tensor, bool, torch.dtype]:
    """Validate and lift features to ``(B, N, d_v)`` in the working dtype (float32 or float64)."""
    if features.dim() not in (2, 3):
        raise ValueError(f"features must be (N, d_v) or (B, N, d_v), got shape {tuple(features.shape)}")
    check_finite("features", features)
    batched = features.dim() == 3
    work = torch.float64 if features.dtype == torch.float64 else torch.float32
    x = (features if batched else features.unsqueeze(0)).to(work)
    return x, batched, work


@torch.no_grad()
def jvp_sensitivity(
    features: Tensor,
    projector: Projector,
    *,
    num_directions: int = 64,
    generator: torch.Generator | None = None,
    directions: Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """S(i) = (1/m) sum_j ||J_i u_j|| with J_i u_j from forward-mode AD (the h -> 0 limit of Eq. 3).

    The directions are drawn exactly as :func:`sensitivity` draws them (same generator, same
    bank), so ``jvp`` and ``central`` differ only by the finite-difference error. Directions are
    pushed through the projector ``chunk_size`` at a time with ``torch.func.vmap`` over
    ``torch.func.jvp``: the primal M(x) is computed once per chunk, the tangents in one
    batched pass.

    Args:
        features: ``(N, d_v)`` or ``(B, N, d_v)`` pre-projector features.
        projector: callable ``(..., d_v) -> (..., d_l)``, token-wise, differentiable; a half
            precision ``nn.Module`` is run as a float32 copy.
        num_directions: m (ignored when ``directions`` is given).
        generator: CPU generator for the directions (a fresh one seeded 0 if None).
        directions: ``(m, d_v)`` unit directions to use as they are.
        chunk_size: directions per batched pass; by default the largest with
            ``B * chunk * N * (d_v + d_l) <= 2**24`` elements.

    Returns:
        ``(N,)`` or ``(B, N)`` sensitivities, float32 (float64 for float64 inputs).
    """
    x, batched, work = _as_batch(features)
    bsz, n, d_v = x.shape
    if directions is None:
        directions = draw_directions(num_directions, d_v, generator, x.device)
    elif directions.dim() != 2 or directions.shape[1] != d_v:
        raise ValueError(f"directions must be (m, {d_v}), got shape {tuple(directions.shape)}")
    u = directions.to(device=x.device, dtype=work)  # (m, d_v)
    proj = float32_projector(projector)
    if chunk_size is None:
        d_l = proj(x[:1, :1]).shape[-1]
        chunk_size = max(1, CHUNK_ELEMENTS // (bsz * n * (d_v + d_l)))

    def push(direction: Tensor) -> Tensor:
        """``(d_v,)`` direction -> ``(B, N, d_l)`` J_i u for every token (tangent output of jvp)."""
        return torch.func.jvp(proj, (x,), (direction.expand_as(x),))[1]

    batched_push = torch.func.vmap(push)
    total = torch.zeros(bsz, n, dtype=work, device=x.device)
    for start in range(0, u.shape[0], chunk_size):
        ju = batched_push(u[start : start + chunk_size])  # (c, B, N, d_l)
        total += ju.to(work).norm(dim=-1).sum(dim=0)
    scores = total / u.shape[0]
    return scores if batched else scores[0]


# ---------------------------------------------------------------------------------------------
# closed-form: two-layer MLP projectors
# ---------------------------------------------------------------------------------------------
def _gelu_erf_grad(z: Tensor) -> Tensor:
    """d/dz [z Phi(z)] = Phi(z) + z phi(z) (exact GELU)."""
    cdf = 0.5 * (1.0 + torch.erf(z * (1.0 / math.sqrt(2.0))))
    pdf = torch.exp(-0.5 * z * z) * (1.0 / math.sqrt(2.0 * math.pi))
    return cdf + z * pdf


def _gelu_tanh_grad(z: Tensor) -> Tensor:
    """Derivative of 0.5 z (1 + tanh(c (z + 0.044715 z^3))), c = sqrt(2/pi)."""
    c = math.sqrt(2.0 / math.pi)
    t = torch.tanh(c * (z + 0.044715 * z**3))
    return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * c * (1.0 + 3 * 0.044715 * z * z)


def _sigmoid_scaled_grad(alpha: float) -> Callable[[Tensor], Tensor]:
    """Derivative of z sigmoid(alpha z): s + alpha z s (1 - s)."""

    def grad(z: Tensor) -> Tensor:
        s = torch.sigmoid(alpha * z)
        return s + alpha * z * s * (1.0 - s)

    return grad


def _relu_grad(z: Tensor) -> Tensor:
    return (z > 0).to(z.dtype)


def _identity_grad(z: Tensor) -> Tensor:
    return torch.ones_like(z)


#: Activation class name -> derivative; HF classes are matched by name (no transformers import).
_ACT_GRADS: dict[str, Callable[[Tensor], Tensor]] = {
    "GELUActivation": _gelu_erf_grad,  # transformers "gelu" (nn.functional.gelu, erf form)
    "AccurateGELUActivation": _gelu_tanh_grad,
    "NewGELUActivation": _gelu_tanh_grad,
    "FastGELUActivation": _gelu_tanh_grad,
    "GELUTanh": _gelu_tanh_grad,
    "PytorchGELUTanh": _gelu_tanh_grad,
    "QuickGELUActivation": _sigmoid_scaled_grad(1.702),
    "SiLU": _sigmoid_scaled_grad(1.0),
    "SiLUActivation": _sigmoid_scaled_grad(1.0),
    "ReLU": _relu_grad,
    "Identity": _identity_grad,
    "LinearActivation": _identity_grad,
}


def activation_grad(act: nn.Module) -> Callable[[Tensor], Tensor]:
    """The elementwise derivative act'(z) of a supported activation module (clear error otherwise)."""
    if isinstance(act, nn.GELU):
        return _gelu_tanh_grad if act.approximate == "tanh" else _gelu_erf_grad
    name = type(act).__name__
    if name == "GELUActivation" and getattr(act, "act", None) is not None:
        return _gelu_erf_grad  # both the C and the python path are the erf form
    if name in _ACT_GRADS:
        return _ACT_GRADS[name]
    raise ValueError(
        f"closed-form estimator: unsupported projector activation {name}; supported: nn.GELU "
        f"(exact or tanh), {', '.join(sorted(_ACT_GRADS))}. Use estimator='jvp' or 'central'."
    )


@dataclass(frozen=True)
class MLPProjector:
    """The parts of a Linear -> act -> Linear projector.

    Attributes:
        linear_1: ``Linear(d_v, h)`` (weight W1 ``(h, d_v)``, bias b1 ``(h,)`` or None).
        act_grad: elementwise derivative of the activation, ``(..., h) -> (..., h)``.
        linear_2: ``Linear(h, d_l)`` (weight W2 ``(d_l, h)``).
    """

    linear_1: nn.Linear
    act_grad: Callable[[Tensor], Tensor]
    linear_2: nn.Linear


def mlp_structure(projector: object) -> MLPProjector:
    """Detect a two-layer MLP projector: a module with ``linear_1`` / ``act`` / ``linear_2`` (HF
    ``LlavaMultiModalProjector``) or ``nn.Sequential(Linear, act, Linear)``; ``ValueError`` otherwise."""
    if isinstance(projector, nn.Sequential) and len(projector) == 3:
        lin1, act, lin2 = projector[0], projector[1], projector[2]
    elif (
        isinstance(projector, nn.Module)
        and all(hasattr(projector, a) for a in ("linear_1", "act", "linear_2"))
        # nothing else inside (InternVL's projector has a LayerNorm before linear_1)
        and {name for name, _ in projector.named_children()} <= {"linear_1", "act", "linear_2"}
    ):
        lin1, act, lin2 = projector.linear_1, projector.act, projector.linear_2
    else:
        raise ValueError(
            "closed-form estimator needs a two-layer MLP projector (a module with linear_1/act/linear_2, "
            f"e.g. LlavaMultiModalProjector, or nn.Sequential(Linear, act, Linear)); got {type(projector).__name__}. "
            "Use estimator='jvp' (any differentiable projector) or 'central'."
        )
    if not (isinstance(lin1, nn.Linear) and isinstance(lin2, nn.Linear)):
        raise ValueError(
            f"closed-form estimator: projector layers must be nn.Linear, got {type(lin1).__name__} / "
            f"{type(lin2).__name__}. Use estimator='jvp' or 'central'."
        )
    if lin1.out_features != lin2.in_features:
        raise ValueError(f"projector widths do not chain: {lin1.out_features} -> {lin2.in_features}")
    return MLPProjector(lin1, activation_grad(act), lin2)


#: projector module -> (weights signature, K); entries go away with the module.
_KERNELS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, Tensor]] = weakref.WeakKeyDictionary()


def _signature(mlp: MLPProjector, dtype: torch.dtype) -> tuple:
    """Identity of the weights K was built from (storage, in-place version, dtype, device)."""
    w1, w2 = mlp.linear_1.weight, mlp.linear_2.weight
    return (w1.data_ptr(), w1._version, w2.data_ptr(), w2._version, dtype, w1.device)


@torch.no_grad()
def projector_kernel(projector: nn.Module, dtype: torch.dtype = torch.float32) -> Tensor:
    """K = (W2^T W2) * (W1 W1^T), ``(h, h)``, cached per projector module (rebuilt if weights change).

    Costs h^2 (d_v + d_l) multiply-adds once (LLaVA-1.5-7B: 86 G, ~1 s on 2 CPU cores) and
    4 h^2 bytes in float32 (64 MiB for h = 4096).
    """
    mlp = mlp_structure(projector)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    key = _signature(mlp, work)
    hit = _KERNELS.get(projector)
    if hit is not None and hit[0] == key:
        return hit[1]
    w1 = mlp.linear_1.weight.to(work)  # (h, d_v)
    w2 = mlp.linear_2.weight.to(work)  # (d_l, h)
    kernel = (w2.T @ w2) * (w1 @ w1.T)  # (h, h), symmetric PSD (Schur product theorem)
    _KERNELS[projector] = (key, kernel)
    return kernel


@torch.no_grad()
def closed_form_sensitivity(
    features: Tensor, projector: Projector, *, chunk_size: int | None = None
) -> Tensor:
    """sqrt(E_u ||J_i u||^2) = sqrt(g_i^T K g_i / d_v), g_i = act'(W1 x_i + b1) (see module doc).

    Args:
        features: ``(N, d_v)`` or ``(B, N, d_v)`` pre-projector features.
        projector: a two-layer MLP module (see :func:`mlp_structure`); its weights are read in
            float32 (float64 for float64 features and weights) whatever the module dtype.
        chunk_size: tokens per pass (default: as many as keep ``chunk * h <= 2**24``).

    Returns:
        ``(N,)`` or ``(B, N)`` sensitivities, float32 (float64 for float64 inputs).
    """
    if not isinstance(projector, nn.Module):
        mlp_structure(projector)  # raises the explanatory error
    x, batched, work = _as_batch(features)
    mlp = mlp_structure(projector)
    if mlp.linear_1.in_features != x.shape[-1]:
        raise ValueError(f"features have d_v={x.shape[-1]}, projector expects {mlp.linear_1.in_features}")
    wdtype = (
        torch.float64
        if work == torch.float64 and mlp.linear_1.weight.dtype == torch.float64
        else torch.float32
    )
    kernel = projector_kernel(projector, wdtype)  # (h, h)
    w1 = mlp.linear_1.weight.to(wdtype)
    b1 = None if mlp.linear_1.bias is None else mlp.linear_1.bias.to(wdtype)
    rows = x.reshape(-1, x.shape[-1]).to(wdtype)  # (B*N, d_v)
    h = kernel.shape[0]
    chunk = chunk_size or max(1, CHUNK_ELEMENTS // (4 * h))
    out = torch.empty(rows.shape[0], dtype=wdtype, device=x.device)
    for start in range(0, rows.shape[0], chunk):
        pre = torch.nn.functional.linear(rows[start : start + chunk], w1, b1)  # (c, h)
        g = mlp.act_grad(pre)  # (c, h) act'(W1 x + b1)
        out[start : start + chunk] = ((g @ kernel) * g).sum(dim=-1)  # g^T K g = ||J||_F^2
    scores = (out.clamp_min(0.0) / x.shape[-1]).sqrt().to(work).reshape(x.shape[:2])  # (B, N)
    return scores if batched else scores[0]


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimator:
    """A named sensitivity estimator.

    Attributes:
        name: option value (``ctx.options["estimator"]``, ``--estimator``).
        uses_directions: whether ``num_directions`` (m) matters.
        uses_step: whether ``step`` (h) matters.
        summary: one line for docs and ``--help``.
    """

    name: str
    uses_directions: bool
    uses_step: bool
    summary: str


ESTIMATORS: dict[str, Estimator] = {
    "central": Estimator("central", True, True, "paper's central finite difference, 2m projector passes"),
    "jvp": Estimator("jvp", True, False, "exact J u by forward-mode AD, same directions, m tangent passes"),
    "closed-form": Estimator(
        "closed-form", False, False, "sqrt(g^T K g / d_v) for Linear-act-Linear projectors, ~1 pass"
    ),
}

#: Library default (evidence: benchmarks/results/estimator_study.json and benchmarks/README.md).
DEFAULT_ESTIMATOR = "closed-form"


def list_estimators() -> list[str]:
    return list(ESTIMATORS)


def get_estimator(name: str) -> Estimator:
    """The :class:`Estimator` called ``name`` (``ValueError`` listing the choices otherwise)."""
    key = name.strip().lower().replace("_", "-")
    key = {"closed": "closed-form", "closedform": "closed-form", "fd": "central"}.get(key, key)
    if key not in ESTIMATORS:
        raise ValueError(f"unknown sensitivity estimator {name!r}; choose from {', '.join(ESTIMATORS)}")
    return ESTIMATORS[key]


def estimate_sensitivity(
    features: Tensor,
    projector: Projector,
    estimator: str = DEFAULT_ESTIMATOR,
    *,
    num_directions: int = 64,
    step: float = 0.01,
    generator: torch.Generator | None = None,
    directions: Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """Per-token sensitivity S ``(N,)`` / ``(B, N)`` of ``features`` ``(N, d_v)`` / ``(B, N, d_v)``.

    ``num_directions`` / ``generator`` / ``directions`` apply to ``central`` and ``jvp``, ``step``
    to ``central`` only; ``closed-form`` uses none of them. ``chunk_size`` counts directions
    (``central``, ``jvp``) or tokens (``closed-form``).
    """
    est = get_estimator(estimator)
    if est.name == "central":
        return central_sensitivity(
            features,
            projector,
            num_directions=num_directions,
            step=step,
            generator=generator,
            directions=directions,
            chunk_size=chunk_size,
        )
    if est.name == "jvp":
        return jvp_sensitivity(
            features,
            projector,
            num_directions=num_directions,
            generator=generator,
            directions=directions,
            chunk_size=chunk_size,
        )
    return closed_form_sensitivity(features, projector, chunk_size=chunk_size)
