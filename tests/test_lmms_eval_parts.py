"""The lmms-eval plugin's parts that need no lmms-eval: model_args, batching, answering a batch."""

from __future__ import annotations

import importlib.util

import pytest

from zooprune.lmms_eval.accounting import RunLedger, rank_path, request_tokens
from zooprune.lmms_eval.args import merge_cli_config, parse_model_args
from zooprune.lmms_eval.batching import make_batches, restore_order, settings_key, truncate_at_stop
from zooprune.lmms_eval.runner import GenerationSettings, generate_batch, loglikelihood_batch


def test_model_args_types_keep_int_vs_float_and_options() -> None:
    args = parse_model_args(
        {"pretrained": "m", "method": "zoo", "keep": 64, "seed": 3, "batch_size": "8", "estimator": "central"}
    )
    assert args.keep == 64 and isinstance(args.keep, int)
    assert args.batch_size == 8 and args.seed == 3
    assert args.options == {"estimator": "central"}
    assert parse_model_args({"pretrained": "m", "keep": 0.25}).keep == 0.25
    assert parse_model_args({"pretrained": "m", "keep": "11.1%"}).keep == pytest.approx(0.111)
    assert parse_model_args({"pretrained": "m", "keep": 1.0}).keep == 1.0  # ratio 1 = no pruning
    defaults = parse_model_args({"pretrained": "m", "max_batch_size": None, "device": None})
    assert (defaults.method, defaults.keep, defaults.seed, defaults.batch_size) == ("zoo", 64, 0, 1)


@pytest.mark.parametrize(
    "bad",
    [
        {"keep": 0},
        {"keep": 1.5},
        {"keep": True},
        {"batch_size": "auto"},
        {"batch_size": 0},
        {"seed": 1.5},
        {"estimator": "nope"},
    ],
)
def test_model_args_rejected(bad: dict) -> None:
    with pytest.raises((ValueError, TypeError)):
        parse_model_args({"pretrained": "m", **bad})


def test_model_args_need_pretrained_and_model_args_win_over_cli() -> None:
    with pytest.raises(ValueError, match="pretrained"):
        parse_model_args({"method": "zoo"})
    merged = merge_cli_config({"pretrained": "m", "batch_size": 8}, {"batch_size": 1, "device": "cpu"})
    assert merged == {"pretrained": "m", "batch_size": 8, "device": "cpu"}


def test_batches_group_by_key_longest_first_and_restore_order() -> None:
    items = [("a", 3), ("b", 9), ("a", 5), ("a", 1), ("b", 2)]
    batches = make_batches(items, 2, key=lambda x: x[0], length=lambda x: x[1])
    assert [b.indices for b in batches] == [(2, 0), (3,), (1, 4)]
    outputs = [[items[i][1] * 10 for i in b.indices] for b in batches]
    assert restore_order(batches, outputs, len(items)) == [30, 90, 50, 10, 20]
    assert settings_key({"until": ["\n"], "max_new_tokens": 4}) == settings_key({"max_new_tokens": 4, "until": ["\n"]})
    assert truncate_at_stop("yes\nno", ["\n", ""]) == "yes"


def test_generation_settings_from_task() -> None:
    s = GenerationSettings.from_task({"until": "\n", "max_new_tokens": 4, "temperature": 0}, 128)
    assert s.until == ("\n",) and s.hf_kwargs() == {"max_new_tokens": 4, "num_beams": 1, "do_sample": False}
    assert GenerationSettings.from_task(None, 16).max_new_tokens == 16
    with pytest.raises(ValueError):
        GenerationSettings.from_task({"until": 3}, 16)


def test_ledger_summary_and_rank_paths(tmp_path) -> None:
    import torch

    from zooprune.report import PruneReport

    report = PruneReport("zoo", 4, tokens_before=16, tokens_after=4, kept_indices=torch.arange(4), text_tokens=9)
    tokens = request_tokens([report], output_tokens=2)
    assert tokens.input_tokens == 13
    ledger = RunLedger.empty("zoo", 4)
    ledger.add("t", "test", 0, "generate_until", tokens)
    summary = ledger.summary()["total"]
    assert summary["visual_tokens_before"] == 16 and summary["visual_tokens_after"] == 4
    assert ledger.write(tmp_path / "r.json").is_file()
    assert rank_path("out/r.json", 0, 1).name == "r.json"
    assert rank_path("out/r.json", 1, 2).name == "r.rank1.json"


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    import zooprune
    from zooprune.testing.tiny import save_tiny_llava

    path = save_tiny_llava(tmp_path_factory.mktemp("tiny"), seed=0)
    return zooprune.load(path, method="zoo", keep=4, seed=0)


def test_batched_answers_equal_one_by_one(vlm, images) -> None:
    settings = GenerationSettings(max_new_tokens=5)
    contexts = ["what is in the image ?", "<image>\nhow many red circle", "describe this picture"]
    batched = generate_batch(vlm, contexts, [[im] for im in images], settings)
    single = [generate_batch(vlm, [c], [[im]], settings)[0] for c, im in zip(contexts, images)]
    assert [text for text, _ in batched] == [text for text, _ in single]
    assert all(tokens.visual_after == 4 < tokens.visual_before for _, tokens in batched)
    assert [t.input_tokens for _, t in batched] == [t.input_tokens for _, t in single]


def test_text_only_requests_are_answered_unpruned(vlm) -> None:
    (text, tokens), = generate_batch(vlm, ["what is a circle ?"], [[]], GenerationSettings(max_new_tokens=3))
    assert isinstance(text, str) and tokens.visual_before == tokens.visual_after == 0 and tokens.input_tokens > 0


def test_loglikelihood_matches_greedy_generation(vlm, images) -> None:
    settings = GenerationSettings(max_new_tokens=2)
    contexts = ["what is in the image ?", "describe this picture"]
    answers = generate_batch(vlm, contexts, [[im] for im in images[:2]], settings)
    conts = [" " + text for text, _ in answers]
    scores = loglikelihood_batch(vlm, contexts, conts, [[im] for im in images[:2]])
    wrong = loglikelihood_batch(vlm, contexts, [" zzz qqq", " zzz qqq"], [[im] for im in images[:2]])
    for score, bad in zip(scores, wrong):
        assert score.greedy and score.logprob < 0 and score.tokens.visual_after == 4
        assert bad.logprob <= score.logprob and score.mean_nll == -score.logprob / score.num_tokens


@pytest.mark.skipif(importlib.util.find_spec("lmms_eval") is None, reason="lmms-eval is not installed")
def test_registration_points_at_an_lmms_model() -> None:
    from lmms_eval.api.model import lmms

    from zooprune.lmms_eval.models import AVAILABLE_MODELS
    from zooprune.lmms_eval.models.zooprune import ZooPrune
    from zooprune.lmms_eval.registration import manifests

    (manifest,) = manifests()
    assert manifest.model_id == "zooprune" and manifest.simple_class_path.endswith(".ZooPrune")
    assert AVAILABLE_MODELS == {"zooprune": "ZooPrune"} and issubclass(ZooPrune, lmms)


def tiny_families() -> list[str]:
    """Every family with a tiny checkpoint builder, LLaVA aside (tested above)."""
    from zooprune.testing.tiny import BUILDERS

    return sorted(set(BUILDERS) - {"llava"})


@pytest.mark.parametrize("family", tiny_families())
def test_other_families_batched_equal_one_by_one(family: str, images, tmp_path) -> None:
    """The plugin's batch path on every other family (ragged image sizes), and the library's answers."""
    import zooprune
    from zooprune.testing.tiny import save_tiny_llava

    vlm = zooprune.load(save_tiny_llava(tmp_path / family, seed=0, family=family), method="zoo", keep=0.25)
    settings = GenerationSettings(max_new_tokens=4)
    contexts = ["what is in the image ?", "describe this picture", "how many red circle"]
    batched = generate_batch(vlm, contexts, [[im] for im in images], settings)
    single = [generate_batch(vlm, [c], [[im]], settings)[0] for c, im in zip(contexts, images)]
    assert [text for text, _ in batched] == [text for text, _ in single]
    assert [text for text, _ in batched] == vlm.generate(images, contexts, max_new_tokens=4).texts
    assert all(0 < t.visual_after < t.visual_before for _, t in batched)
    scores = loglikelihood_batch(vlm, contexts, [" yes", " no", " two"], [[im] for im in images])
    alone = [loglikelihood_batch(vlm, [c], [a], [[im]])[0] for c, a, im in zip(contexts, [" yes", " no", " two"], images)]
    assert [s.logprob for s in scores] == pytest.approx([s.logprob for s in alone], abs=1e-4)


def test_relative_table_from_results_files(tmp_path) -> None:
    import json

    from zooprune.lmms_eval.relative import load_scores, relative, table

    def write(name: str, gqa: float, pope: float) -> str:
        folder = tmp_path / name / "model"
        folder.mkdir(parents=True)
        results = {"gqa": {"exact_match,none": gqa}, "pope": {"pope_accuracy,none": pope}}
        (folder / "20260101_results.json").write_text(json.dumps({"results": results}))
        return str(tmp_path / name)

    base, pruned = write("none", 0.60, 0.80), write("zoo", 0.57, 0.84)
    assert relative(load_scores(base), load_scores(pruned)) == pytest.approx({"gqa": 95.0, "pope": 105.0})
    assert "| 100.00 |" in table(base, [pruned])


@pytest.mark.skipif(importlib.util.find_spec("lmms_eval") is None, reason="lmms-eval is not installed")
def test_model_built_like_lmms_eval_builds_it(tiny_llava_dir, images) -> None:
    """lmms-eval passes its own --batch_size/--device beside model_args: no clash, model_args win."""
    from zooprune.lmms_eval.models.zooprune import ZooPrune, flatten_visuals

    lm = ZooPrune.create_from_arg_string(
        f"pretrained={tiny_llava_dir},method=zoo,keep=4,batch_size=3,device=cpu",
        {"batch_size": 1, "max_batch_size": None, "device": None},
    )
    assert lm.batch_size == 3 and str(lm.device) == "cpu" and lm.vlm.config.keep == 4
    assert (lm.rank, lm.world_size) == (0, 1)
    assert flatten_visuals([images[0], [images[1]], None]) == [images[0], images[1]]
    with pytest.raises(NotImplementedError, match="images only"):
        flatten_visuals(["clip.mp4"])
    with pytest.raises(NotImplementedError):
        lm.generate_until_multi_round([])


def _write_lmms_run(folder, results: dict, samples: dict) -> str:
    """An lmms-eval --output_path folder: one results file and its samples files (doc_id + metric)."""
    import json

    sub = folder / "model"
    sub.mkdir(parents=True)
    (sub / "20260101_000000_results.json").write_text(json.dumps({"results": results}))
    for task, rows in samples.items():
        lines = [json.dumps({"doc_id": i, **row}) for i, row in enumerate(rows)]
        (sub / f"20260101_000000_samples_{task}.jsonl").write_text("\n".join(lines) + "\n")
    return str(folder)


def test_relative_table_intervals_hand_computed(tmp_path) -> None:
    """gqa over 10 documents: unpruned 6/10, pruned 4/10 (pruned alone right on 1, unpruned
    alone on 3). Wilson and McNemar by hand; the bootstrap intervals bracket the estimates."""
    import math

    from zooprune.lmms_eval.relative import load_run, table

    base_ok = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    zoo_ok = [1, 1, 1, 0, 0, 0, 1, 0, 0, 0]
    pope = [{"pope_accuracy": {"question_id": i, "score": 1}} for i in range(10)]  # dicts: no interval
    base = _write_lmms_run(
        tmp_path / "none",
        {"gqa": {"exact_match,none": 0.6}, "pope": {"pope_accuracy,none": 0.8}},
        {"gqa": [{"exact_match": float(v)} for v in base_ok], "pope": pope},
    )
    zoo = _write_lmms_run(
        tmp_path / "zoo",
        {"gqa": {"exact_match,none": 0.4}, "pope": {"pope_accuracy,none": 0.84}},
        {"gqa": [{"exact_match": float(v)} for v in zoo_ok], "pope": pope},
    )
    same = _write_lmms_run(
        tmp_path / "same",
        {"gqa": {"exact_match,none": 0.6}},
        {"gqa": [{"exact_match": float(v)} for v in base_ok]},
    )
    run = load_run(base)
    assert run["gqa"].binary and run["gqa"].per_doc == {str(i): float(v) for i, v in enumerate(base_ok)}
    assert run["pope"].per_doc is None and run["pope"].value == 0.8

    def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
        p = k / n
        centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return centre - half, centre + half

    low, high = wilson(6, 10)
    out = table(base, [zoo, same])
    assert f"| {base} | 60.0 [{100 * low:.1f}, {100 * high:.1f}] | 0.8 |" in out
    low, high = wilson(4, 10)
    assert f"| {zoo} | 40.0 [{100 * low:.1f}, {100 * high:.1f}] | 0.84 |" in out
    # McNemar, exact: 1 vs 3 discordant documents, p = 2 * P(Bin(4, 1/2) <= 1) = 2 * 5/16
    rel_row = next(line for line in out.splitlines() if line.startswith(f"| {zoo} | 66.7 ["))
    vs_row = next(line for line in out.splitlines() if line.startswith(f"| {zoo} | -20.0 ["))
    assert "p=0.62 n.d." in vs_row and vs_row.endswith("| - |")  # pope: no per-document scores
    rel_low, rel_high = (float(x) for x in rel_row.split("[")[1].split("]")[0].split(", "))
    assert rel_low < 66.7 < rel_high and "| 105.0 |" in rel_row  # pope 84/80, no interval
    assert not rel_row.rstrip(" |").endswith("]")  # the average needs every task paired: none
    # the same answers as the unpruned run: a zero-width interval, not distinguishable
    same_vs = next(line for line in out.splitlines() if line.startswith(f"| {same} | +0.0"))
    assert "+0.0 [+0.0, +0.0] p=1 n.d." in same_vs
    assert f"| {same} | 100.0 [100.0, 100.0] | - | 100.00 [100.00, 100.00] |" in out


def test_relative_table_distinguishable_and_graded_scores(tmp_path) -> None:
    """40 documents where the pruned run loses 20 answers: the interval excludes 0 (no ``n.d.``);
    graded per-document scores (VQA accuracy) get a bootstrap difference but no Wilson, no p."""
    from zooprune.eval.stats import paired_difference_interval
    from zooprune.lmms_eval.relative import table

    base_ok, zoo_ok = [1.0] * 40, [1.0] * 20 + [0.0] * 20
    soft_base, soft_zoo = [1.0, 0.3, 0.6, 1.0] * 10, [0.6, 0.3, 0.0, 1.0] * 10
    base = _write_lmms_run(
        tmp_path / "none",
        {"gqa": {"exact_match,none": 1.0}, "vqav2_val": {"exact_match,none": sum(soft_base) / 40}},
        {"gqa": [{"exact_match": v} for v in base_ok], "vqav2_val": [{"exact_match": v} for v in soft_base]},
    )
    zoo = _write_lmms_run(
        tmp_path / "zoo",
        {"gqa": {"exact_match,none": 0.5}, "vqav2_val": {"exact_match,none": sum(soft_zoo) / 40}},
        {"gqa": [{"exact_match": v} for v in zoo_ok], "vqav2_val": [{"exact_match": v} for v in soft_zoo]},
    )
    out = table(base, [zoo])
    vs_row = next(line for line in out.splitlines() if line.startswith(f"| {zoo} | -50.0 ["))
    gqa_cell, vqa_cell = (cell.strip(" |") for cell in vs_row.split(" | ")[1:3])
    assert "n.d." not in gqa_cell and "p=1.9e-06" in gqa_cell  # 2 * 0.5**20
    low, high = paired_difference_interval(soft_zoo, soft_base)
    assert vqa_cell == f"-25.0 [{100 * low:+.1f}, {100 * high:+.1f}]" and high < 0
    assert f"| {base} | 100.0 [91.2, 100.0] | 0.725 |" in out  # Wilson 40/40; graded: the raw score
    relative_part = out.split("Relative to the unpruned run")[1]
    rel_row = next(line for line in relative_part.splitlines() if line.startswith(f"| {zoo} | 50.0 ["))
    avg = rel_row.rstrip(" |").rsplit("| ", 1)[1]
    assert avg.startswith("57.76 [") and avg.endswith("]")  # (50 + 100 * 0.475 / 0.725) / 2, both paired
    avg_low, avg_high = (float(x) for x in avg[7:-1].split(", "))
    assert avg_low < 57.76 < avg_high
