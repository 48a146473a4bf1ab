"""lmms-eval's own ``vllm`` model backend evaluates a pruned model through the zooprune vLLM plugin
(issue 12, item 5): no zooprune glue, the deployment default goes in ``--model_args`` as
``hf_overrides={"zooprune": {...}}``, which lmms-eval parses as JSON and hands to ``vllm.LLM``.

The testbed task (``tests/lmms_eval_task/zooprune_testbed.yaml``, open answers, exact match) on
``N_DOCS`` documents, the committed testbed LLaVA (196 visual tokens per image), three runs:

- ``stock``: vLLM without the plugin (``VLLM_PLUGINS=""``, vLLM's own allowlist), in one child;
- ``none`` (``{"method": "none"}``) and ``zoo`` (``{"method": "zoo", "keep": KEEP}``) through the
  plugin, one engine after the other in a second child.

Each child builds lmms-eval's model from the ``--model_args`` string as lmms-eval's CLI does
(``get_model("vllm").create_from_arg_string``) and runs ``lmms_eval.evaluator.simple_evaluate``
with that instance, so the engine's prompt-token counter (``vllm:prompt_tokens``) can be read:
lmms-eval's vllm backend logs no per-sample token counts. Checks: the pruned run's prompts are
shorter by exactly ``N_DOCS * (196 - KEEP)`` tokens, keep-all answers equal stock vLLM's
(and so do the prompt tokens), and the scores are sane.

Runs only where vLLM and lmms-eval are installed (``.venv-vllm``).
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None or importlib.util.find_spec("lmms_eval") is None,
    reason="needs vLLM and lmms-eval (.venv-vllm)",
)

from .vllm_support import ROOT, TESTBED, env_without_plugin  # noqa: E402

TASK_DIR = ROOT / "tests" / "lmms_eval_task"
TASK = "zooprune_testbed"
N_DOCS = 16
BATCH = 8
N_VISUAL = 196
KEEP = 49
DOC_FIELDS = ("image", "question", "answer", "family")

#: lmms-eval's ``--model_args`` for its vllm backend: the engine settings of tests/vllm_support.py
#: (float32, short context, 10 % of RAM for the KV cache, eager); lmms-eval defaults
#: trust_remote_code to True, the testbed needs none.
ENGINE_ARGS = (
    f"model={TESTBED},dtype=float32,max_model_len=512,gpu_memory_utilization=0.1,"
    "enforce_eager=True,trust_remote_code=False"
)
RUNS = {
    "stock": ENGINE_ARGS,
    "none": ENGINE_ARGS + ',hf_overrides={"zooprune": {"method": "none"}}',
    "zoo": ENGINE_ARGS + f',hf_overrides={{"zooprune": {{"method": "zoo", "keep": {KEEP}}}}}',
}


def _prompt_tokens(llm: Any) -> float:
    """The engine's ``vllm:prompt_tokens`` counter (summed over its label sets)."""
    return float(sum(m.value for m in llm.get_metrics() if m.name == "vllm:prompt_tokens"))


def _evaluate_main(spec_path: str, out_path: str) -> None:
    """Child process: each named ``--model_args`` string in turn through lmms-eval's vllm backend."""
    spec = json.loads(Path(spec_path).read_text())
    os.chdir(spec["split"])  # the task's docs.jsonl and image paths are relative to it
    from lmms_eval import evaluator
    from lmms_eval.models import get_model
    from lmms_eval.tasks import TaskManager

    out: dict[str, Any] = {}
    for name, model_args in spec["runs"].items():
        lm = get_model("vllm").create_from_arg_string(model_args, {"batch_size": BATCH})
        before = _prompt_tokens(lm.client)
        results = evaluator.simple_evaluate(
            model=lm,
            tasks=[TASK],
            limit=spec["limit"],
            log_samples=True,
            task_manager=TaskManager("WARNING", include_path=str(TASK_DIR), model_name="vllm"),
            verbosity="WARNING",
        )
        samples = results["samples"][TASK]
        out[name] = {
            "model_class": f"{type(lm).__module__}.{type(lm).__name__}",
            "exact_match": results["results"][TASK]["exact_match,none"],
            "n_samples": results["n-samples"][TASK],
            "answers": {str(s["doc_id"]): s["resps"] for s in samples},
            "correct": {str(s["doc_id"]): s["exact_match"] for s in samples},
            "prompt_tokens": _prompt_tokens(lm.client) - before,
        }
        lm.client.llm_engine.engine_core.shutdown()
        del lm
        gc.collect()
    Path(out_path).write_text(json.dumps(out))


def _run_child(runs: dict[str, str], split: Path, work: Path, env: dict[str, str]) -> dict[str, Any]:
    spec, out, log = work / "spec.json", work / "out.json", work / "child.log"
    spec.write_text(json.dumps({"split": str(split), "limit": N_DOCS, "runs": runs}))
    env = {**env, "HF_HOME": str(work / "hf-home"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    with log.open("w") as sink:
        proc = subprocess.run(
            [sys.executable, "-m", "tests.test_lmms_eval_vllm", "evaluate", str(spec), str(out)],
            cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, timeout=900,
        )  # fmt: skip
    # lmms-eval's CLI exits 0 on some errors; here the child's own output file is the check
    assert proc.returncode == 0 and out.exists(), (
        f"lmms-eval vllm run failed; {log}:\n{log.read_text()[-4000:]}"
    )
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    if not TESTBED.is_dir():
        pytest.skip("needs the committed testbed model (models/testbed-llava)")
    from zooprune.testbed import EVAL_SEED, write_split

    split = tmp_path_factory.mktemp("split")
    samples = write_split(split, EVAL_SEED, N_DOCS)
    with samples.open() as src, (split / "docs.jsonl").open("w") as dst:
        for line in src:
            row = json.loads(line)
            dst.write(json.dumps({k: row[k] for k in DOC_FIELDS}) + "\n")
    stock = {"stock": RUNS["stock"]}
    plugin = {name: RUNS[name] for name in ("none", "zoo")}
    return {
        **_run_child(stock, split, tmp_path_factory.mktemp("stock"), env_without_plugin()),
        **_run_child(plugin, split, tmp_path_factory.mktemp("plugin"), dict(os.environ)),
    }


def test_lmms_eval_ran_its_own_vllm_backend_on_every_document(runs: dict[str, dict[str, Any]]) -> None:
    for run in runs.values():
        assert run["model_class"].startswith("lmms_eval.models.")
        assert run["n_samples"] == {"original": N_DOCS, "effective": N_DOCS}
        assert sorted(map(int, run["answers"])) == list(range(N_DOCS))


def test_pruned_prompts_are_shorter_by_exactly_the_dropped_visual_tokens(
    runs: dict[str, dict[str, Any]],
) -> None:
    """The deployment default from ``--model_args`` reached the plugin: every one of the N_DOCS
    prompts carried KEEP visual placeholders instead of 196."""
    stock, none, zoo = (runs[name]["prompt_tokens"] for name in ("stock", "none", "zoo"))
    assert stock > N_DOCS * N_VISUAL
    assert none == stock
    assert zoo == stock - N_DOCS * (N_VISUAL - KEEP)


def test_keep_all_through_lmms_eval_vllm_equals_stock_vllm(runs: dict[str, dict[str, Any]]) -> None:
    assert runs["none"]["answers"] == runs["stock"]["answers"]
    assert runs["none"]["exact_match"] == runs["stock"]["exact_match"]


def test_scores_are_sane(runs: dict[str, dict[str, Any]]) -> None:
    """The testbed model answers most open questions unpruned (0.68 over 120 documents on the HF
    path) and still many with a quarter of its tokens; the mean is the per-document mean."""
    for run in runs.values():
        assert run["exact_match"] == pytest.approx(sum(run["correct"].values()) / N_DOCS)
    assert runs["stock"]["exact_match"] >= 0.5
    assert 0.25 <= runs["zoo"]["exact_match"] <= 1.0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "evaluate":
        _evaluate_main(sys.argv[2], sys.argv[3])
