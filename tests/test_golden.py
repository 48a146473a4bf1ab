"""The architecture reshape changed no behaviour: every (family, method) pair of the support matrix,
at two budgets, keeps the same tokens and writes the same greedy text as the committed golden file
(recorded before the reshape; see ``tests/golden/record.py``)."""

from __future__ import annotations

import json

from .golden.record import GOLDEN, compute


def test_kept_indices_and_texts_equal_the_golden_file():
    golden = json.loads(GOLDEN.read_text())
    now = compute()
    assert sorted(now) == sorted(golden), "the set of supported (family, method) pairs changed"
    changed = [key for key in golden if now[key] != golden[key]]
    assert not changed, f"{len(changed)} cases differ from the golden file, e.g. {changed[:5]}"
