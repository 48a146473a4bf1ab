"""``zooprune plot``: eval and bench JSON joined by method and budget, figures written as PNG and SVG."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zooprune.cli import main
from zooprune.plots import plot_results
from zooprune.results import Results, keep_key, read_results, with_prefill_ms, with_time_ms


def eval_json(path: Path, estimator: str | None = None) -> Path:
    rows = [("none", "all", 16, 0.9, 2.0)] + [
        (m, str(k), k, acc, 0.1 * k) for m, k, acc in [("zoo", 4, 0.7), ("zoo", 8, 0.85), ("divprune", 4, 0.6), ("divprune", 8, 0.8)]
    ]  # fmt: skip
    results = [
        {"method": m, "keep": k, "accuracy": a, "mean_kept_tokens": t, "mean_prefill_gflops": g,
         "per_family": {"count": a}, "relative": 100 * a / 0.9}
        for m, k, t, a, g in rows
    ]  # fmt: skip
    options = {} if estimator is None else {"estimator": estimator}
    path.write_text(
        json.dumps({"settings": {"model": "/m/tiny", "method_options": options}, "results": results})
    )
    return path


def bench_json(path: Path) -> Path:
    def row(method: str, keep: float, estimator: str | None, kept: int, prefill: float) -> dict:
        return {
            "method": method,
            "keep": keep,
            "estimator": estimator,
            "kept_tokens": kept,
            "ms": {"prefill": prefill},
        }

    rows = [row("none", 1.0, None, 16, 100.0), row("zoo", 4, "central", 4, 41.0), row("zoo", 4, "closed-form", 4, 40.0),
            row("zoo", 8, "central", 8, 61.0), row("zoo", 8, "closed-form", 8, 60.0), row("divprune", 4, None, 4, 30.0)]  # fmt: skip
    path.write_text(json.dumps({"meta": {"source": "/m/tiny"}, "rows": rows}))
    return path


def test_keep_key_matches_eval_labels() -> None:
    assert keep_key("none", 1.0) == ("none", "all")
    assert keep_key("zoo", 64) == keep_key("zoo", "64") == ("zoo", "64")
    assert keep_key("zoo", 0.111) == ("zoo", "0.111")


@pytest.mark.parametrize(("estimator", "zoo_ms"), [(None, [40.0, 60.0]), ("central", [41.0, 61.0])])
def test_prefill_times_join_by_method_budget_and_estimator(tmp_path, estimator, zoo_ms) -> None:
    results = read_results([eval_json(tmp_path / "e.json", estimator), bench_json(tmp_path / "b.json")])
    assert results.mismatch() is None
    joined = {(r["method"], r["keep"]): r["prefill_ms"] for r in with_prefill_ms(results)}
    # divprune@8 has no bench row: left out of the time plot, not given a made-up time
    assert joined == {
        ("none", "all"): 100.0,
        ("zoo", "4"): zoo_ms[0],
        ("zoo", "8"): zoo_ms[1],
        ("divprune", "4"): 30.0,
    }


def test_time_to_first_token_joins_like_prefill(tmp_path) -> None:
    bench = json.loads(bench_json(tmp_path / "b.json").read_text())
    for row in bench["rows"]:
        row["ms"]["ttft"] = row["ms"]["prefill"] + 5
    (tmp_path / "b.json").write_text(json.dumps(bench))
    results = read_results([eval_json(tmp_path / "e.json"), tmp_path / "b.json"])
    assert {(r["method"], r["keep"]): r["ttft_ms"] for r in with_time_ms(results, "ttft")}[
        ("zoo", "4")
    ] == 45.0
    out = plot_results([], tmp_path / "fig", results=results)
    assert tmp_path / "fig_accuracy_vs_ttft.svg" in out


def test_summaries_with_their_own_prefill_time_need_no_bench() -> None:
    results = Results(summaries=[{"method": "zoo", "keep": "4", "accuracy": 0.5, "prefill_ms": 12}])
    assert with_prefill_ms(results)[0]["prefill_ms"] == 12.0


def test_plot_command_writes_every_figure_as_png_and_svg(tmp_path, capsys) -> None:
    eval_path, bench_path = eval_json(tmp_path / "e.json"), bench_json(tmp_path / "b.json")
    assert (
        main(["plot", "--results", str(eval_path), str(bench_path), "--out", str(tmp_path / "out" / "fig")])
        == 0
    )
    written = capsys.readouterr().out.split()
    names = ["accuracy_vs_budget", "accuracy_vs_prefill", "accuracy_vs_flops", "prefill_vs_budget"]
    assert written == [str(tmp_path / "out" / f"fig_{n}.{ext}") for n in names for ext in ("png", "svg")]
    for name in names:
        with Image.open(tmp_path / "out" / f"fig_{name}.png") as png:
            assert png.size == (910, 585)  # 7 x 4.5 inches at 130 dpi
            assert np.unique(np.asarray(png.convert("L"))).size > 10  # drawn, not blank
        svg = (tmp_path / "out" / f"fig_{name}.svg").read_text()
        assert ET.fromstring(svg).tag.endswith("svg")
        assert "zoo" in svg and "divprune" in svg and "unpruned" in svg


def test_plot_command_on_bench_or_eval_alone_and_on_bad_input(tmp_path, capsys) -> None:
    assert main(["plot", "--results", str(bench_json(tmp_path / "b.json"))]) == 0
    assert capsys.readouterr().out.split() == [
        str(tmp_path / f"b_prefill_vs_budget.{e}") for e in ("png", "svg")
    ]
    assert main(["plot", "--results", str(eval_json(tmp_path / "e.json"))]) == 0
    assert "e_accuracy_vs_prefill.png" not in capsys.readouterr().out  # no time without bench
    (tmp_path / "x.json").write_text("[1, 2]")
    assert main(["plot", "--results", str(tmp_path / "x.json")]) == 2
    assert "neither" in capsys.readouterr().err
    assert main(["plot", "--results", str(tmp_path / "missing.json")]) == 2


def test_plot_warns_when_eval_and_bench_used_different_models(tmp_path, capsys) -> None:
    bench = json.loads(bench_json(tmp_path / "b.json").read_text())
    bench["meta"]["source"] = "synthetic llava-1.5-7b"
    (tmp_path / "b.json").write_text(json.dumps(bench))
    assert main(["plot", "--results", str(eval_json(tmp_path / "e.json")), str(tmp_path / "b.json")]) == 0
    assert "different models" in capsys.readouterr().err
