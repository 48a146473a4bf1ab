"""lmms-eval really runs the ``zooprune`` model, offline, on a local testbed task (issue 7).

``tests/lmms_eval_task/`` defines two tasks (YAML, loaded with ``--include_path``) over a split
written by :func:`zooprune.testbed.write_split`: open answers (``generate_until``, exact match)
and a two-way multiple choice (``loglikelihood``, accuracy). The model is the v1 testbed model, whose
questions the split holds, when ``models/testbed-llava`` exists, else a tiny random checkpoint (accuracy then means nothing,
but it must be there). Skipped only when lmms-eval is not installed
(``scripts/install_lmms_eval.sh`` installs it; CI does).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("lmms_eval") is None,
    reason="lmms-eval is not installed (bash scripts/install_lmms_eval.sh)",
)

TASK_DIR = Path(__file__).parent / "lmms_eval_task"
TASK = "zooprune_testbed"
MC_TASK = "zooprune_testbed_mc"
TASKS = (TASK, MC_TASK)
NUM_DOCS = 6
KEEP = 0.25  # a ratio: a quarter of the visual tokens, whatever the model's grid
DOC_FIELDS = ("image", "question", "answer", "family")


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A testbed split (PNG images + docs.jsonl with the fields the task reads)."""
    from zooprune.testbed import EVAL_SEED, write_split

    out = tmp_path_factory.mktemp("testbed-split")
    samples = write_split(out, EVAL_SEED, NUM_DOCS)
    with samples.open() as src, (out / "docs.jsonl").open("w") as dst:
        for line in src:
            row = json.loads(line)
            dst.write(json.dumps({k: row[k] for k in DOC_FIELDS}) + "\n")
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The v1 testbed model (the split is v1's) if the repository has it, else a tiny random LLaVA."""
    from zooprune.testing.tiny import save_tiny_llava

    v1_model = Path(__file__).resolve().parents[1] / "models" / "testbed-llava"
    if v1_model.is_dir():
        return v1_model
    return save_tiny_llava(tmp_path_factory.mktemp("tiny-llava"), seed=0)


def run_lmms_eval(
    model_args: str,
    split_dir: Path,
    out: Path,
    env_extra: dict[str, str],
    launcher: tuple[str, ...] = (sys.executable,),
) -> dict[str, Any]:
    """Run lmms-eval's CLI in ``split_dir``; lmms-eval's results JSON, samples and our token reports."""
    env = {
        **os.environ,
        "HF_HOME": str(out / "hf-home"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **env_extra,
    }
    report = out / "visual_tokens.json"
    cmd = [
        *launcher, "-m", "lmms_eval",
        "--model", "zooprune",
        "--model_args", f"{model_args},report={report}",
        "--tasks", ",".join(TASKS),
        "--include_path", str(TASK_DIR),
        "--output_path", str(out / "lmms"),
        "--log_samples",
        "--verbosity", "WARNING",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=split_dir, env=env, capture_output=True, text=True, timeout=300)
    log = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"lmms-eval failed:\n{log}"
    results = sorted((out / "lmms").rglob("*_results.json"))
    samples = {task: sorted((out / "lmms").rglob(f"*_samples_{task}.jsonl")) for task in TASKS}
    # lmms-eval logs some errors and still exits 0: its output files are the real check
    assert len(results) == 1, f"no results file from lmms-eval:\n{log}"
    assert all(len(files) == 1 for files in samples.values()), f"no samples files from lmms-eval:\n{log}"
    return {
        "results": json.loads(results[0].read_text()),
        "samples": {
            task: [json.loads(line) for line in files[0].read_text().splitlines() if line.strip()]
            for task, files in samples.items()
        },
        "report": json.loads(report.read_text()) if report.exists() else None,
        "rank_reports": [json.loads(p.read_text()) for p in sorted(out.glob("visual_tokens.rank*.json"))],
    }


@pytest.fixture(scope="module")
def runs(split_dir: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The same task evaluated pruned (zoo, batch 4) and unpruned (none, batch 2).

    The pruned run finds the model through the package's entry point; the unpruned run also
    names the plugin in LMMS_EVAL_PLUGINS (lmms-eval's own, older mechanism).
    """
    base = f"pretrained={model_dir},seed=0,device=cpu,dtype=float32"
    return {
        "zoo": run_lmms_eval(
            f"{base},method=zoo,keep={KEEP},estimator=central,batch_size=4",
            split_dir,
            tmp_path_factory.mktemp("lmms-zoo"),
            {},
        ),
        "none": run_lmms_eval(
            f"{base},method=none,batch_size=2",
            split_dir,
            tmp_path_factory.mktemp("lmms-none"),
            {"LMMS_EVAL_PLUGINS": "zooprune.lmms_eval"},
        ),
    }


@pytest.mark.parametrize("name", ["zoo", "none"])
def test_results_file_has_accuracy_and_sample_counts(runs: dict[str, dict[str, Any]], name: str) -> None:
    run = runs[name]
    results = run["results"]
    for task, metric in ((TASK, "exact_match,none"), (MC_TASK, "acc,none")):
        accuracy = results["results"][task][metric]
        assert isinstance(accuracy, float) and 0.0 <= accuracy <= 1.0
        assert results["n-samples"][task] == {"original": NUM_DOCS, "effective": NUM_DOCS}
        assert sorted(s["doc_id"] for s in run["samples"][task]) == list(range(NUM_DOCS))
        assert all(c["input_tokens"] > 0 for s in run["samples"][task] for c in s["token_counts"])
        efficiency = results["efficiency"]["by_task"][task]
        assert efficiency["docs"] == NUM_DOCS and efficiency["docs_with_token_counts"] == NUM_DOCS
    assert f"method={name}" in results["config"]["model_args"]
    assert run["report"]["by_task"][MC_TASK]["requests"] == 2 * NUM_DOCS  # one per choice


@pytest.mark.parametrize("name", ["zoo", "none"])
def test_multiple_choice_scored_by_lowest_loss(runs: dict[str, dict[str, Any]], name: str) -> None:
    """Each choice gets (mean NLL, is_greedy) as lmms-eval's models return; the lowest loss wins."""
    for sample in runs[name]["samples"][MC_TASK]:
        (right, _), (wrong, _) = [(float(a), b) for a, b in sample["filtered_resps"]]
        assert right > 0 and wrong > 0
        assert sample["acc"] == float(right < wrong)


def test_pruned_run_used_fewer_visual_tokens(runs: dict[str, dict[str, Any]]) -> None:
    zoo, none = runs["zoo"]["report"]["by_task"][TASK], runs["none"]["report"]["by_task"][TASK]
    assert zoo["requests"] == none["requests"] == NUM_DOCS
    assert none["visual_tokens_after"] == none["visual_tokens_before"] > 0
    assert zoo["visual_tokens_before"] == none["visual_tokens_before"]
    per_image = none["visual_tokens_before"] // NUM_DOCS
    assert zoo["visual_tokens_after"] == NUM_DOCS * int(KEEP * per_image) < zoo["visual_tokens_before"]
    # lmms-eval's own results file: the language model's inputs shrank by exactly the dropped tokens
    for task in TASKS:
        zoo_in = runs["zoo"]["results"]["efficiency"]["by_task"][task]["total_input_tokens"]
        none_in = runs["none"]["results"]["efficiency"]["by_task"][task]["total_input_tokens"]
        dropped = runs["zoo"]["report"]["by_task"][task]["visual_tokens_before"] - (
            runs["zoo"]["report"]["by_task"][task]["visual_tokens_after"]
        )
        assert none_in - zoo_in == dropped > 0


def test_per_sample_token_counts_match_the_report(runs: dict[str, dict[str, Any]]) -> None:
    for name in ("zoo", "none"):
        rows = {(r["task"], r["doc_id"]): r for r in runs[name]["report"]["requests"]}
        for sample in runs[name]["samples"][TASK]:
            row = rows[(TASK, sample["doc_id"])]
            assert sample["token_counts"][0]["input_tokens"] == row["text_tokens"] + row["visual_after"]


def test_two_processes_split_the_documents_and_agree_with_one(
    runs: dict[str, dict[str, Any]], split_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    """Data parallel as on several GPUs, here 2 CPU processes (torchrun; gloo): same results as one."""
    launcher = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    two = run_lmms_eval(
        f"pretrained={model_dir},seed=0,device=cpu,dtype=float32,method=zoo,keep={KEEP},estimator=central,batch_size=4",
        split_dir,
        tmp_path,
        {"OMP_NUM_THREADS": "1"},
        launcher,
    )
    one = runs["zoo"]
    assert len(two["rank_reports"]) == 2
    docs = [sorted({r["doc_id"] for r in rep["requests"] if r["task"] == TASK}) for rep in two["rank_reports"]]
    assert sorted(docs[0] + docs[1]) == list(range(NUM_DOCS)) and docs[0] and docs[1]
    for task, metric in ((TASK, "exact_match,none"), (MC_TASK, "acc,none")):
        assert two["results"]["n-samples"][task] == {"original": NUM_DOCS, "effective": NUM_DOCS}
        assert two["results"]["results"][task][metric] == one["results"]["results"][task][metric]
        for key in ("docs", "total_input_tokens", "total_output_tokens"):
            assert two["results"]["efficiency"]["by_task"][task][key] == one["results"]["efficiency"]["by_task"][task][key]
    answers = {s["doc_id"]: s["filtered_resps"] for s in one["samples"][TASK]}
    assert {s["doc_id"]: s["filtered_resps"] for s in two["samples"][TASK]} == answers
