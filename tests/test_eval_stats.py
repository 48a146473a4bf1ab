"""Statistics in every accuracy output: Wilson intervals, paired bootstrap, McNemar, and how the eval
table, JSON and plot carry them."""

from __future__ import annotations

import math

import numpy as np
import pytest

import zooprune
from zooprune.eval.cache import PredictionCache
from zooprune.eval.data import generated_items
from zooprune.eval.report import NOT_DISTINGUISHABLE, accuracy_table, markdown_table, table_rows
from zooprune.eval.runner import evaluate
from zooprune.eval.stats import half_width, mcnemar_p, paired_comparison, wilson_interval
from zooprune.plots import plot_accuracy_vs_budget


def test_wilson_interval_matches_the_formula_by_hand():
    # 8 of 10, z = 1.959964: centre (p + z^2/2n) / (1 + z^2/n), half z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n)
    z, n, p = 1.959963985, 10, 0.8
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(centre - half, abs=1e-6) and high == pytest.approx(centre + half, abs=1e-6)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="successes <= n"):
        wilson_interval(6, 5)


def test_the_default_sample_size_gives_at_most_five_points():
    from zooprune.cli.eval_cmd import DEFAULT_SAMPLES

    assert half_width(DEFAULT_SAMPLES) <= 0.05 < half_width(DEFAULT_SAMPLES // 2)


def test_mcnemar_on_a_known_table():
    # 10 questions only A gets right, 2 only B: exact two-sided p = 2 * P(X <= 2 | n=12, 1/2) = 158 / 4096
    assert mcnemar_p(10, 2) == pytest.approx(158 / 4096)
    assert mcnemar_p(2, 10) == pytest.approx(158 / 4096)
    assert mcnemar_p(0, 0) == 1.0


def test_paired_bootstrap_is_seeded_deterministic_and_pairs_questions():
    rng = np.random.default_rng(3)
    a = rng.random(300) < 0.7
    b = a.copy()
    flip = rng.choice(300, size=40, replace=False)
    b[flip[:30]] = False  # B loses 30 questions A answers ...
    b[flip[30:]] = True  # ... and gains up to 10
    first, again = paired_comparison(a, b), paired_comparison(a, b)
    assert first == again  # same seed, same interval
    assert paired_comparison(a, b, seed=1) != first  # the seed is what fixes it
    assert first.low <= first.difference <= first.high
    assert first.difference == pytest.approx(a.mean() - b.mean())
    assert first.a_only + first.b_only == int((a != b).sum())
    assert first.distinguishable and first.mcnemar_p < 0.01
    # pairing matters: the unpaired spread of two 300-question accuracies is far wider
    unpaired_half = 1.96 * math.sqrt(2 * 0.7 * 0.3 / 300)
    assert (first.high - first.low) / 2 < unpaired_half


def test_identical_answers_are_not_distinguishable():
    same = paired_comparison([True, False, True], [True, False, True])
    assert (same.difference, same.low, same.high, same.mcnemar_p) == (0.0, 0.0, 0.0, 1.0)
    assert not same.distinguishable
    with pytest.raises(ValueError, match="equal-length"):
        paired_comparison([True], [True, False])


def test_eval_outputs_carry_intervals_and_paired_comparisons(tiny_llava_dir, tmp_path):
    vlm = zooprune.load(tiny_llava_dir)
    cache = PredictionCache(tmp_path / "p.jsonl", {"model": "tiny"})
    summaries = evaluate(
        vlm,
        generated_items(7, 12),
        ["none", "zoo", "divprune", "random"],
        [4],
        cache,
        progress=False,
        references=["zoo", "divprune"],
    )
    by = {s["method"]: s for s in summaries}
    for s in summaries:
        low, high = s["ci95"]
        assert low <= s["accuracy"] <= high
        assert (low, high) == pytest.approx(wilson_interval(round(s["accuracy"] * 12), 12))
        assert set(s["per_family_ci95"]) == set(s["per_family"])
        assert "correct" not in s  # the per-question vectors stay out of the JSON
    assert by["none"]["vs_unpruned"] is None and by["zoo"]["vs_references"]["zoo"] is None
    assert by["random"]["vs_references"]["zoo"]["n"] == 12 and by["zoo"]["vs_unpruned"]["n"] == 12
    # each reference gets its own paired comparison: random vs divprune is random's correct minus divprune's
    rnd, div = by["random"], by["divprune"]
    assert by["random"]["vs_references"]["divprune"]["difference"] == pytest.approx(
        rnd["accuracy"] - div["accuracy"]
    )
    assert by["zoo"]["vs_references"]["divprune"]["difference"] == pytest.approx(
        by["zoo"]["accuracy"] - div["accuracy"]
    )
    text, markdown = accuracy_table(summaries), markdown_table(summaries)
    assert "vs zoo" in text and "vs divprune" in text and "McNemar" in text and "| vs none |" in markdown
    assert text.splitlines()[0].index("vs zoo") < text.splitlines()[0].index("vs divprune")


def table_summary(accuracy: float, ci: list[float], **comparisons) -> dict:
    """One hand-made eval summary (method ``zoo``, budget 4, one family) plus ``comparisons``."""
    return {
        "method": "zoo",
        "keep": "4",
        "mean_kept_tokens": 4.0,
        "accuracy": accuracy,
        "ci95": ci,
        "per_family": {"count": accuracy},
        "per_family_ci95": {"count": ci},
        "relative": 90.0,
        **comparisons,
    }


def test_table_says_not_distinguishable():
    vs_unpruned = paired_comparison([True, False, True, False], [True, True, True, False]).to_dict()
    summary = table_summary(0.5, [0.3, 0.7], vs_unpruned=vs_unpruned, references=[], vs_references={})
    row = accuracy_table([summary]).splitlines()[2]
    assert "50.0 [30.0, 70.0]" in row and row.endswith(NOT_DISTINGUISHABLE)


def test_plot_draws_interval_bands(tmp_path):
    summaries = [
        {"method": "none", "keep": "all", "accuracy": 0.8, "ci95": [0.75, 0.85], "mean_kept_tokens": 16},
        {"method": "zoo", "keep": "8", "accuracy": 0.7, "ci95": [0.6, 0.8], "mean_kept_tokens": 8},
        {"method": "zoo", "keep": "4", "accuracy": 0.6, "ci95": [0.5, 0.7], "mean_kept_tokens": 4},
    ]
    paths = plot_accuracy_vs_budget(summaries, tmp_path / "plot")
    svg = next(p for p in paths if p.suffix == ".svg").read_text()
    assert svg.count("fill-opacity: 0.15") >= 1  # the method's band
    assert svg.count("opacity: 0.08") >= 1  # the unpruned model's band
    without = plot_accuracy_vs_budget(
        [{k: v for k, v in s.items() if k != "ci95"} for s in summaries], tmp_path / "bare"
    )
    assert "fill-opacity: 0.15" not in next(p for p in without if p.suffix == ".svg").read_text()


def test_table_reads_results_written_with_one_reference():
    """Committed JSON from before several references were allowed (``reference`` / ``vs_reference``)."""
    cmp = paired_comparison([True, True, True, False], [False, False, True, False]).to_dict()
    old = table_summary(0.75, [0.3, 0.95], vs_unpruned=None, reference="zoo", vs_reference=cmp)
    head, row = table_rows([old])
    assert head[-1] == "vs zoo" and row[-1].startswith("+50.0 [")
