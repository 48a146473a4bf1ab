"""Run several methods on one image and prompt: the answers and reports that figures and the demo show."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from PIL import Image

from ..config import Keep
from ..report import PruneReport

if TYPE_CHECKING:
    from ..vlm import PrunedVLM

#: The method whose scores are drawn as the sensitivity heatmap.
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
) -> list[MethodRun]:
    """Answer ``prompt`` about ``image`` once per method at budget ``keep`` (the vlm's seed and
    options stay as configured; its method and budget are left at the last method's).

    With ``keep_going``, a method that fails with a ``ValueError`` / ``KeyError`` (unknown method,
    a method the model family cannot run) gives a run with ``error`` set instead of raising.
    """
    if not methods:
        raise ValueError("give at least one method")
    runs = []
    for method in methods:
        try:
            vlm.configure(method=method, keep=keep)
            result = vlm.generate([image], [prompt], max_new_tokens=max_new_tokens)
        except (ValueError, KeyError) as err:
            if not keep_going:
                raise
            message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
            runs.append(MethodRun(method, "", None, error=str(message)))
            continue
        runs.append(MethodRun(method, result.texts[0], result.reports[0], dict(result.timings)))
    return runs


def sensitivity_report(vlm: PrunedVLM, image: Image.Image, prompt: str, runs: list[MethodRun]) -> PruneReport:
    """The zoo report among ``runs`` or, when zoo was not run (or kept every token, which skips
    scoring), a zoo scoring pass at a budget of one token (no generation; scores do not depend
    on the budget)."""
    for run in runs:
        if run.method == SENSITIVITY_METHOD and run.report is not None and run.report.scores is not None:
            return run.report
    previous = vlm.config
    try:
        vlm.configure(method=SENSITIVITY_METHOD, keep=1)
        return vlm.prepare([image], [prompt]).reports[0]
    finally:
        vlm.config = previous
