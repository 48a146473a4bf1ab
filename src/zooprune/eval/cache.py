"""Append-only JSONL of finished predictions, so a killed evaluation resumes where it stopped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class PredictionCache:
    """Predictions keyed by ``(method, keep, uid)``; the first line records the run's settings.

    Every batch is appended and flushed as soon as it is finished. Reopening the file with the
    same settings restores them; different settings are an error (use another output path).
    """

    def __init__(self, path: str | Path, settings: dict[str, Any]) -> None:
        self.path = Path(path)
        self.settings = settings
        self.rows: dict[tuple[str, str, str], dict[str, Any]] = {}
        if self.path.exists() and self.path.stat().st_size > 0:
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"settings": settings}) + "\n")

    def _load(self) -> None:
        text = self.path.read_text()
        if not text.endswith("\n"):  # the last line was cut short by a kill: drop it, redo it
            text = text[: text.rfind("\n") + 1]
            self.path.write_text(text)
        lines = text.splitlines()
        header = json.loads(lines[0]).get("settings")
        if header != self.settings:
            raise ValueError(
                f"{self.path} holds predictions made with other settings ({header}); "
                "pass another --output, or delete that file to start over"
            )
        for line in lines[1:]:
            row = json.loads(line)
            self.rows[self.key(row["method"], row["keep"], row["uid"])] = row

    @staticmethod
    def key(method: str, keep: int | float | str, uid: str) -> tuple[str, str, str]:
        return (method, str(keep), uid)

    def get(self, method: str, keep: int | float | str, uid: str) -> dict[str, Any] | None:
        return self.rows.get(self.key(method, keep, uid))

    def add(self, rows: list[dict[str, Any]]) -> None:
        with self.path.open("a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
                self.rows[self.key(row["method"], row["keep"], row["uid"])] = row
            f.flush()
