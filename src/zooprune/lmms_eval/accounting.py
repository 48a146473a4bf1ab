"""Visual-token accounting for lmms-eval runs: per-request counts and a per-run summary file."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..report import PruneReport


@dataclass(frozen=True)
class RequestTokens:
    """Tokens one request cost the language model.

    Attributes:
        visual_before: visual tokens its images produced.
        visual_after: visual tokens kept (for in-LLM methods: from the pruning layer on).
        visual_equivalent: visual tokens averaged over language-model layers.
        text_tokens: non-visual prompt tokens.
        output_tokens: generated tokens (0 for loglikelihood).
    """

    visual_before: int
    visual_after: int
    visual_equivalent: float
    text_tokens: int
    output_tokens: int = 0

    @property
    def input_tokens(self) -> int:
        """Language-model input tokens: text plus layer-averaged kept visual tokens (rounded)."""
        return self.text_tokens + round(self.visual_equivalent)


def split_reports(
    reports: Sequence[PruneReport], images_per_request: Sequence[int]
) -> list[list[PruneReport]]:
    """Reports (one per image, in batch order) grouped by the request their image belongs to."""
    if sum(images_per_request) != len(reports):
        raise ValueError(f"{len(reports)} reports for {sum(images_per_request)} images")
    out, start = [], 0
    for n in images_per_request:
        out.append(list(reports[start : start + n]))
        start += n
    return out


def request_tokens(
    reports: Sequence[PruneReport], output_tokens: int = 0, text_tokens: int = 0
) -> RequestTokens:
    """Counts of one request from its images' reports (``text_tokens`` only used without images)."""
    if reports:
        text_tokens = reports[0].text_tokens
    return RequestTokens(
        visual_before=sum(r.tokens_before for r in reports),
        visual_after=sum(r.tokens_after for r in reports),
        visual_equivalent=float(sum(float(r.equivalent_tokens or r.tokens_after) for r in reports)),
        text_tokens=int(text_tokens),
        output_tokens=int(output_tokens),
    )


@dataclass
class RunLedger:
    """Counts of every request a model instance answered, by task and document."""

    method: str
    keep: int | float
    rows: list[dict[str, Any]]

    @classmethod
    def empty(cls, method: str, keep: int | float) -> RunLedger:
        return cls(method, keep, [])

    def add(self, task: str, split: str, doc_id: int, request_type: str, tokens: RequestTokens) -> None:
        """Record one request."""
        self.rows.append(
            {
                "task": task,
                "split": split,
                "doc_id": int(doc_id),
                "request_type": request_type,
                **asdict(tokens),
            }
        )

    def summary(self) -> dict[str, Any]:
        """Totals and per-request means, overall and per task."""

        def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
            n = len(rows)
            before = sum(r["visual_before"] for r in rows)
            after = sum(r["visual_after"] for r in rows)
            return {
                "requests": n,
                "visual_tokens_before": before,
                "visual_tokens_after": after,
                "visual_tokens_equivalent": round(sum(r["visual_equivalent"] for r in rows), 3),
                "mean_visual_tokens_before": before / n if n else 0.0,
                "mean_visual_tokens_after": after / n if n else 0.0,
                "kept_fraction": after / before if before else 1.0,
            }

        tasks = sorted({r["task"] for r in self.rows})
        return {
            "method": self.method,
            "keep": self.keep,
            "total": totals(self.rows),
            "by_task": {t: totals([r for r in self.rows if r["task"] == t]) for t in tasks},
        }

    def write(self, path: str | Path) -> Path:
        """Write the summary plus every row as JSON; returns the path."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({**self.summary(), "requests": self.rows}, indent=2) + "\n")
        return out


def rank_path(path: str | Path, rank: int, world_size: int) -> Path:
    """``path`` for process ``rank``: unchanged for one process, ``name.rankR.json`` for several."""
    p = Path(path)
    if world_size <= 1:
        return p
    return p.with_name(f"{p.stem}.rank{rank}{p.suffix or '.json'}")
