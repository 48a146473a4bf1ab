"""Tensor parallelism: the plugin at TP=2 (two CPU workers) keeps, on every rank, the tokens that
``zooprune.load(...)`` keeps in float32, which ``tests/test_vllm_llava.py`` shows TP=1 keeps too.

At TP=2 the projector is column/row-sharded, the vision attention's heads are split over the ranks
and the embedding table is vocabulary-parallel: the scoring copy gathers the projector's shards
(closed form reads the whole weights), the [CLS] attention gathers q/k, and cdpruner's question
embeddings come through vLLM's parallel embedding. Runs only where vLLM is installed; on CPU
``VLLM_CPU_OMP_THREADS_BIND="0|1"`` (vLLM's setting) gives each worker its own core.
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402

from .vllm_support import ENGINE, TESTBED, chat_prompt, make_questions, vllm_env  # noqa: E402

CASES = [
    ("zoo", {}),
    ("zoo", {"estimator": "central"}),
    ("zoo", {"estimator": "jvp"}),
    ("divprune", {}),
    ("visionzip", {}),
    ("cdpruner", {}),
    ("pool", {}),
]


@pytest.fixture(scope="module")
def llm():
    from vllm import LLM

    with vllm_env(VLLM_ALLOW_INSECURE_SERIALIZATION="1", VLLM_CPU_OMP_THREADS_BIND="0|1"):
        engine = LLM(model=str(TESTBED), tensor_parallel_size=2, **ENGINE)
        yield engine
        engine.llm_engine.engine_core.shutdown()


@pytest.fixture(scope="module")
def hf_vlm():
    import zooprune

    return zooprune.load(str(TESTBED), method="none", dtype=torch.float32)


def test_tp2_keeps_the_tokens_of_the_hf_path_on_every_rank(llm, hf_vlm):
    from vllm import SamplingParams

    from zooprune.vllm.reports import take_reports

    items = make_questions(2)
    for method, options in CASES:
        for it in items:
            settings = {"method": method, "keep": 24, "seed": 1, **options}
            req = {
                "prompt": chat_prompt(it.question),
                "multi_modal_data": {"image": it.image},
                "mm_processor_kwargs": {"zooprune": settings},
            }
            llm.generate([req], SamplingParams(max_tokens=1, temperature=0.0))
            per_rank = llm.apply_model(take_reports)
            expected = hf_vlm.using(method=method, keep=24, seed=1, **options).prepare([it.image], [it.question])
            assert len(per_rank) == 2
            for reports in per_rank:
                (report,) = reports
                assert report["kept_indices"] == expected.reports[0].kept_indices.tolist(), (method, options)
