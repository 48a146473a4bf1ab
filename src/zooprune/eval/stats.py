"""Confidence intervals and paired comparisons for accuracy on the same questions (scipy).

- :func:`wilson_interval`: 95 % Wilson score interval of a proportion (``scipy.stats.binomtest``).
- :func:`paired_comparison`: two configurations answered the same questions; the accuracy
  difference, its paired-bootstrap 95 % interval (``scipy.stats.bootstrap(paired=True)``, seeded:
  the same inputs give the same interval) and the exact McNemar p-value (a two-sided binomial
  test on the discordant questions).
- :func:`paired_difference_interval`, :func:`paired_ratio_interval`: the same paired bootstrap for
  the difference and for the ratio of two means of per-question scores (0/1 or graded; the ratio
  is a pruned run's relative score, ``zooprune.lmms_eval.relative``).
A difference whose interval contains 0 is reported as "not distinguishable".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

#: Confidence level of every interval, and the bootstrap defaults.
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval ``(low, high)`` of ``successes / n``; ``(nan, nan)`` for ``n == 0``."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return float("nan"), float("nan")
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def half_width(n: int, p: float = 0.5, confidence: float = CONFIDENCE) -> float:
    """Half the width of the Wilson interval at accuracy ``p`` over ``n`` questions (p = 0.5 is widest)."""
    low, high = wilson_interval(round(p * n), n, confidence)
    return (high - low) / 2


@dataclass(frozen=True)
class PairedComparison:
    """Configuration A against B on the same ``n`` questions.

    Attributes:
        difference: accuracy(A) - accuracy(B).
        low, high: paired-bootstrap interval of the difference.
        mcnemar_p: exact McNemar p-value (1.0 when no question is answered differently).
        a_only, b_only: questions only A (only B) answers correctly.
    """

    n: int
    difference: float
    low: float
    high: float
    mcnemar_p: float
    a_only: int
    b_only: int

    @property
    def distinguishable(self) -> bool:
        """Whether the interval of the difference excludes 0."""
        return not self.low <= 0.0 <= self.high

    def to_dict(self) -> dict[str, float | int | bool]:
        return {
            "n": self.n,
            "difference": self.difference,
            "ci95": [self.low, self.high],
            "mcnemar_p": self.mcnemar_p,
            "a_only": self.a_only,
            "b_only": self.b_only,
            "distinguishable": self.distinguishable,
        }


def mcnemar_p(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts (binomial test at 1/2)."""
    discordant = a_only + b_only
    if discordant == 0:
        return 1.0
    return float(stats.binomtest(a_only, discordant, 0.5).pvalue)


def paired_comparison(
    a: Sequence[bool],
    b: Sequence[bool],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> PairedComparison:
    """Compare correctness vectors ``a`` and ``b`` (same questions, same order)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or x.size == 0:
        raise ValueError(f"need two equal-length, non-empty correctness vectors, got {x.shape} and {y.shape}")
    a_only, b_only = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
    difference = float(x.mean() - y.mean())
    low, high = paired_difference_interval(x, y, resamples=resamples, seed=seed, confidence=confidence)
    return PairedComparison(x.size, difference, low, high, mcnemar_p(a_only, b_only), a_only, b_only)


def paired_difference_interval(
    a: Sequence[float],
    b: Sequence[float],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Paired-bootstrap interval of ``mean(a) - mean(b)`` (per-question scores, 0/1 or graded,
    same questions, same order); ``(0, 0)`` when ``a == b`` question by question."""
    x, y = _score_vectors(a, b)
    if np.array_equal(x, y):  # identical answers: every resample gives 0
        return 0.0, 0.0
    return _paired_bootstrap(x, y, lambda u, v, axis=-1: u.mean(axis=axis) - v.mean(axis=axis),
                             resamples, seed, confidence)  # fmt: skip


def paired_ratio_interval(
    a: Sequence[float],
    b: Sequence[float],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Paired-bootstrap interval of ``mean(a) / mean(b)`` (per-question scores, same questions,
    same order; e.g. a pruned run's relative score against the unpruned one). ``(r, r)`` when
    ``a == b`` question by question (every resample gives the same ratio)."""
    x, y = _score_vectors(a, b)
    if not y.mean():
        raise ValueError("the ratio needs a non-zero mean of b")
    if np.array_equal(x, y):
        return 1.0, 1.0
    with np.errstate(divide="ignore", invalid="ignore"):  # resamples where b's mean is 0
        return _paired_bootstrap(x, y, lambda u, v, axis=-1: u.mean(axis=axis) / v.mean(axis=axis),
                                 resamples, seed, confidence)  # fmt: skip


def _score_vectors(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Two equal-length, non-empty 1-D float arrays, or a ValueError naming the shapes."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or x.size == 0:
        raise ValueError(f"need two equal-length, non-empty score vectors, got {x.shape} and {y.shape}")
    return x, y


def _paired_bootstrap(
    x: np.ndarray, y: np.ndarray, statistic: Callable[..., np.ndarray], resamples: int, seed: int, confidence: float
) -> tuple[float, float]:
    """Seeded percentile interval of ``statistic(x, y)`` over paired resamples (scipy's bootstrap)."""
    result = stats.bootstrap(
        (x, y),
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)
