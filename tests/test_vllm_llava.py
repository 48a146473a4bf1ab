"""zooprune inside vLLM on the testbed LLaVA (one plugin engine; stock vLLM in a child process).

- keep-all through the plugin: token-identical greedy outputs to stock vLLM (which loads the
  committed testbed checkpoint as is) on ``N_QUESTIONS`` testbed questions;
- cross-engine equivalence: for every pre-LLM method the HF LLaVA adapter supports (zoo with each
  estimator), the kept indices inside vLLM equal those of ``zooprune.load(...)`` in float32, at a
  count and a ratio budget, on two images (tolerance for ties: none needed here, see
  ``test_kept_indices_equal_the_hf_path``);
- testbed accuracy through vLLM (zoo, 24 of 196 tokens) within the CI of the HF path's;
- per-request budgets set the placeholder count; bad ones are clear errors and the engine goes on.

Runs only where vLLM is installed (``.venv-vllm``, see ``scripts/setup-vllm.sh``).
"""

from __future__ import annotations

import math

import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402

from zooprune.adapters.llava import LlavaAdapter  # noqa: E402
from zooprune.eval.metrics import is_correct  # noqa: E402
from zooprune.methods import METHODS  # noqa: E402

from .vllm_support import ENGINE, TESTBED, chat_prompt, make_questions, run_stock, vllm_env  # noqa: E402

N_QUESTIONS = 50
MAX_TOKENS = 4
IMAGE_TOKEN = 4  # the testbed's image_token_index
N_VISUAL = 196


def supported_cases() -> list[tuple[str, dict]]:
    """(method, options) for every registered pre-LLM method the HF LLaVA adapter can run; methods
    that take a sensitivity estimator once per estimator."""
    cases = []
    for name, method in sorted(METHODS.items()):
        if method.in_llm or not method.needs <= LlavaAdapter.provides:
            continue
        if method.takes_estimator:
            cases += [(name, {"estimator": est}) for est in ("closed-form", "jvp", "central")]
        else:
            cases.append((name, {}))
    return cases


@pytest.fixture(scope="module")
def items():
    return make_questions(N_QUESTIONS)


@pytest.fixture(scope="module")
def prompts(items):
    return [chat_prompt(it.question) for it in items]


@pytest.fixture(scope="module")
def llm():
    from vllm import LLM

    with vllm_env(VLLM_ALLOW_INSECURE_SERIALIZATION="1"):  # LLM.apply_model reads the reports
        engine = LLM(model=str(TESTBED), **ENGINE)
        yield engine
        engine.llm_engine.engine_core.shutdown()


@pytest.fixture(scope="module")
def hf_vlm():
    import zooprune

    return zooprune.load(str(TESTBED), method="none", dtype=torch.float32)


def request(prompt, image, zooprune_settings=None):
    req = {"prompt": prompt, "multi_modal_data": {"image": image}}
    if zooprune_settings is not None:
        req["mm_processor_kwargs"] = {"zooprune": zooprune_settings}
    return req


def greedy(max_tokens: int = MAX_TOKENS):
    from vllm import SamplingParams

    return SamplingParams(max_tokens=max_tokens, temperature=0.0)


def vllm_reports(llm) -> list[dict]:
    from zooprune.vllm.reports import take_reports

    return llm.apply_model(take_reports)[0]


def test_keep_all_is_token_identical_to_stock_vllm(llm, items, prompts, tmp_path):
    paths = []
    for i, it in enumerate(items):
        path = tmp_path / f"q{i}.png"
        it.image.save(path)
        paths.append(str(path))
    stock = run_stock(
        TESTBED, [{"prompt": p, "image": im} for p, im in zip(prompts, paths)], tmp_path, MAX_TOKENS
    )
    keep_all = [{"method": "none"}, {"method": "zoo", "keep": 1.0}, {"method": "divprune", "keep": 500}]
    for settings in [None, *keep_all]:
        outs = llm.generate([request(p, it.image, settings) for p, it in zip(prompts, items)], greedy())
        for out, ref in zip(outs, stock):
            assert list(out.prompt_token_ids) == ref["prompt_token_ids"]
            assert list(out.outputs[0].token_ids) == ref["token_ids"], settings
    vllm_reports(llm)  # forget


@pytest.mark.parametrize(
    "case", supported_cases(), ids=lambda c: c[0] + "".join(f"-{v}" for v in c[1].values())
)
def test_kept_indices_equal_the_hf_path(llm, hf_vlm, items, prompts, case):
    """Same image, method, budget and seed: the same kept indices (exactly; the scores agree to
    1e-3 of their range, so no near-tie decided a selection here) as ``zooprune.load`` in float32."""
    method, options = case
    vllm_reports(llm)
    for keep in (24, 0.333):
        for i in (0, 1):
            settings = {"method": method, "keep": keep, "seed": 3, **options}
            out = llm.generate([request(prompts[i], items[i].image, settings)], greedy(1))
            hf = hf_vlm.using(method=method, keep=keep, seed=3, **options).prepare(
                [items[i].image], [items[i].question]
            )
            expected = hf.reports[0]
            reports = vllm_reports(llm)
            if not METHODS.get(method).prunes:  # vLLM's stock path: every token, no report
                assert reports == [] and expected.tokens_after == N_VISUAL
                assert sum(t == IMAGE_TOKEN for t in out[0].prompt_token_ids) == N_VISUAL
                continue
            (report,) = reports
            assert report["kept_indices"] == expected.kept_indices.tolist(), (method, options, keep, i)
            assert report["tokens_after"] == expected.tokens_after
            assert sum(t == IMAGE_TOKEN for t in out[0].prompt_token_ids) == expected.tokens_after
            if expected.scores is not None:
                ours = torch.tensor(report["scores"])
                span = float(expected.scores.max() - expected.scores.min()) or 1.0
                assert float((ours - expected.scores).abs().max()) <= 1e-3 * span


def test_testbed_accuracy_matches_the_hf_path(llm, hf_vlm, items, prompts):
    settings = {"method": "zoo", "keep": 24}
    outs = llm.generate([request(p, it.image, settings) for p, it in zip(prompts, items)], greedy())
    ours = [is_correct(o.outputs[0].text, it.answer) for o, it in zip(outs, items)]
    hf = hf_vlm.using(**settings).generate(
        [it.image for it in items], [it.question for it in items], max_new_tokens=MAX_TOKENS
    )
    theirs = [is_correct(t, it.answer) for t, it in zip(hf.texts, items)]
    a, b = sum(ours) / len(ours), sum(theirs) / len(theirs)
    ci = 1.96 * math.sqrt(max(a * (1 - a), 1e-9) / len(ours) + max(b * (1 - b), 1e-9) / len(theirs))
    assert abs(a - b) <= ci, (a, b, ci)
    agree = sum(x == y for x, y in zip(ours, theirs))
    assert agree >= len(ours) - 2, f"vLLM and HF disagree on {len(ours) - agree} of {len(ours)} questions"
    vllm_reports(llm)


def test_per_request_budgets_set_the_placeholders(llm, items, prompts):
    reqs = [request(prompts[0], items[0].image, {"method": "zoo", "keep": k}) for k in (16, 48)]
    reqs.append(request(prompts[0], items[0].image, {"method": "pool", "keep": 31}))  # 5 x 6 grid
    reqs.append(request(prompts[0], items[0].image, {"method": "visionzip", "keep": 0.25}))
    reqs.append(request(prompts[0], items[0].image))  # no setting anywhere: stock
    outs = llm.generate(reqs, greedy(1))
    counts = [sum(t == IMAGE_TOKEN for t in o.prompt_token_ids) for o in outs]
    assert counts == [16, 48, 30, 49, N_VISUAL]
    text = [len(o.prompt_token_ids) - c for o, c in zip(outs, counts)]
    assert len(set(text)) == 1  # the text around the image is unchanged
    vllm_reports(llm)


@pytest.mark.parametrize(
    "settings, words",
    [
        ({"method": "nope"}, ["'nope'", "zoo"]),
        ({"keep": 0}, ["keep", "0"]),
        ({"keep": 1.5}, ["keep", "1.5"]),
        ({"keep": "many"}, ["budget", "'many'"]),
        ({"method": "zoo", "num_directions": 8}, ["num_directions", "ignored"]),
        ({"method": "fastv"}, ["'fastv'", "inside the language model"]),
        ({"method": "zoo", "fidelity": "reference"}, ["fidelity", "'improved'"]),
        ("zoo", ["mapping"]),
    ],
)
def test_bad_settings_are_clear_errors_and_the_engine_goes_on(llm, items, prompts, settings, words):
    from vllm.exceptions import VLLMValidationError

    with pytest.raises(VLLMValidationError) as err:
        llm.generate([request(prompts[0], items[0].image, settings)], greedy(1))
    for word in words:
        assert word in str(err.value)
    (out,) = llm.generate([request(prompts[0], items[0].image, {"method": "random", "keep": 8})], greedy(1))
    assert sum(t == IMAGE_TOKEN for t in out.prompt_token_ids) == 8
    vllm_reports(llm)


def test_eval_loop_through_vllm_gives_the_hf_predictions(llm, hf_vlm, items, tmp_path):
    """``zooprune eval --engine vllm``'s model (``VllmVLM``) in the eval loop: the same accuracies
    and token counts as ``zooprune.load`` on the same questions."""
    from transformers import AutoConfig, AutoProcessor

    from zooprune.eval.cache import PredictionCache
    from zooprune.eval.runner import evaluate
    from zooprune.vllm.engine import VllmVLM

    engine = VllmVLM(
        llm, AutoProcessor.from_pretrained(str(TESTBED)), AutoConfig.from_pretrained(str(TESTBED))
    )
    subset, methods, kw = (
        items[:20],
        ["none", "zoo", "divprune"],
        {"batch_size": 20, "progress": False, "references": ()},
    )
    ours = evaluate(
        engine, subset, methods, [24], PredictionCache(tmp_path / "v.jsonl", {"engine": "vllm"}), **kw
    )
    theirs = evaluate(
        hf_vlm, subset, methods, [24], PredictionCache(tmp_path / "h.jsonl", {"engine": "hf"}), **kw
    )
    pick = ("method", "keep", "accuracy", "mean_kept_tokens", "mean_tokens_before")
    assert [[s[k] for k in pick] for s in ours] == [[s[k] for k in pick] for s in theirs]
    with pytest.raises(ValueError, match="inside the language model"):
        engine.using(method="fastv", keep=8)
    vllm_reports(llm)
