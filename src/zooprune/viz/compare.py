"""Run several methods on one image and prompt: the answers and reports that figures and the demo show.

Nothing here changes the :class:`~zooprune.PrunedVLM` it is given: each method runs on
``vlm.using(method=..., keep=...)``, a copy sharing the model with its own configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image

from ..config import Keep, comparison_options
from ..methods import get_method
from ..report import PruneReport

if TYPE_CHECKING:
    from ..vlm import PrunedVLM

#: The method run for the sensitivity heatmap when no method that takes an estimator was run.
SENSITIVITY_METHOD = "zoo"


@dataclass
class MethodRun:
    """One method's outcome on one image: answer, pruning report and batch timings (ms), or the
    error that stopped it (e.g. a method this model family does not support)."""

    method: str
    answer: str
    report: PruneReport | None
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def summary(self) -> str:
        """``kept k/N tokens | prune s ms | prefill p ms`` (one line), or the error."""
        if self.report is None:
            return f"not run: {self.error}"
        r, t = self.report, self.timings
        prune_ms = r.timings.get("score", 0.0) + r.timings.get("select", 0.0)
        return (
            f"kept {r.tokens_after}/{r.tokens_before} tokens | prune {prune_ms:.1f} ms | "
            f"prefill {t.get('prefill', 0.0):.1f} ms"
        )


def run_methods(
    vlm: PrunedVLM,
    image: Image.Image,
    prompt: str,
    methods: list[str],
    keep: Keep,
    max_new_tokens: int = 16,
    keep_going: bool = False,
    estimator_options: Mapping[str, Any] | None = None,
) -> list[MethodRun]:
    """Answer ``prompt`` about ``image`` once per method at budget ``keep``, with the vlm's seed and
    crop budget; ``vlm`` itself is left as it was (each method runs on ``vlm.using(...)``).

    Args:
        estimator_options: options of the sensitivity estimator, given only to the methods that
            take one (``takes_estimator``); every other method runs with its default options.
        keep_going: a method that fails with a ``ValueError`` / ``KeyError`` / ``TypeError``
            (unknown method, a method the model family cannot run, a bad option) gives a run with
            ``error`` set instead of raising.
    """
    if not methods:
        raise ValueError("give at least one method")
    runs = []
    for method in methods:
        try:
            trial = vlm.using(method=method, keep=keep, **comparison_options(method, estimator_options))
            result = trial.generate([image], [prompt], max_new_tokens=max_new_tokens)
        except (ValueError, KeyError, TypeError) as err:
            if not keep_going:
                raise
            message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
            runs.append(MethodRun(method, "", None, error=str(message)))
            continue
        runs.append(MethodRun(method, result.texts[0], result.reports[0], dict(result.timings)))
    return runs


def sensitivity_report(
    vlm: PrunedVLM,
    image: Image.Image,
    prompt: str,
    runs: list[MethodRun],
    estimator_options: Mapping[str, Any] | None = None,
) -> PruneReport:
    """Per-token sensitivities to draw as a heatmap: the first report in ``runs`` whose method takes
    a sensitivity estimator (``takes_estimator``: its scores are sensitivities) or, when none was run
    (or it kept every token, which skips scoring), a zoo scoring pass with ``estimator_options`` at a
    budget of one token (no generation; scores do not depend on the budget). ``vlm`` is left as it was.
    """
    for run in runs:
        report = run.report
        if report is not None and report.scores is not None and get_method(report.method).takes_estimator:
            return report
    options = comparison_options(SENSITIVITY_METHOD, estimator_options)
    scoring = vlm.using(method=SENSITIVITY_METHOD, keep=1, fidelity="improved", **options)  # it has no reference mode
    return scoring.prepare([image], [prompt]).reports[0]
