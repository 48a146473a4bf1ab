"""Helpers of the vLLM tests (``tests/test_vllm_*.py``): engine settings, testbed prompts, and a
stock-vLLM run in its own process (``python -m tests.vllm_support stock IN OUT``: vLLM loads its
plugins process-wide, so stock vLLM runs where ``VLLM_PLUGINS`` lists none).

Engines here follow ``/work/shared/docs/vllm-notes.md``: float32 (kept indices are compared with
``zooprune.load(...)`` in float32), ``max_model_len=512``, ``gpu_memory_utilization=0.1`` (on CPU,
the fraction of RAM for the KV cache), eager mode, one image per prompt.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TESTBED = ROOT / "models" / "testbed-llava"
#: A held-out testbed split (training used seeds >= TRAIN_SEED_BASE; the eval default is another one).
DATA_SEED = 4242

ENGINE = {
    "dtype": "float32",
    "max_model_len": 512,
    "gpu_memory_utilization": 0.1,
    "enforce_eager": True,
    "limit_mm_per_prompt": {"image": 1},
    "seed": 0,
}


def make_questions(n: int) -> list[Any]:
    """``n`` family-balanced testbed questions (``EvalItem``: image, question, answer, family)."""
    from zooprune.eval.data import generated_items

    return generated_items(DATA_SEED, n)


def chat_prompt(question: str, model_dir: Path = TESTBED) -> str:
    """The checkpoint's own chat template around one image and ``question`` (as ``PrunedVLM`` does)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(model_dir))
    content = [{"type": "image"}, {"type": "text", "text": question}]
    return processor.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )


@contextlib.contextmanager
def vllm_env(**settings: str) -> Iterator[None]:
    """vLLM's own environment settings (e.g. ``VLLM_ALLOW_INSECURE_SERIALIZATION`` for
    ``LLM.apply_model``) for the engines started inside, restored afterwards."""
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_without_plugin() -> dict[str, str]:
    """The environment with vLLM's plugin allowlist matching nothing (vLLM's own setting)."""
    return {**os.environ, "VLLM_PLUGINS": ""}


def run_stock(model_dir: Path, requests: list[dict[str, Any]], work: Path, max_tokens: int) -> list[dict[str, Any]]:
    """Greedy outputs of stock vLLM (no plugin) for ``requests`` (``prompt`` + ``image`` path),
    run in a child process; returns per request ``prompt_token_ids`` and ``token_ids``."""
    src, dst = work / "stock_in.json", work / "stock_out.json"
    src.write_text(json.dumps({"model": str(model_dir), "requests": requests, "max_tokens": max_tokens}))
    log = work / "stock.log"
    with log.open("w") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "tests.vllm_support", "stock", str(src), str(dst)],
            cwd=ROOT,
            env=env_without_plugin(),
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"stock vLLM run failed ({proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    return json.loads(dst.read_text())


def _stock_main(src: str, dst: str) -> None:
    from PIL import Image
    from vllm import LLM, SamplingParams

    job = json.loads(Path(src).read_text())
    llm = LLM(model=job["model"], **ENGINE)
    prompts = [
        {"prompt": r["prompt"], "multi_modal_data": {"image": Image.open(r["image"]).convert("RGB")}}
        for r in job["requests"]
    ]
    outs = llm.generate(prompts, SamplingParams(max_tokens=job["max_tokens"], temperature=0.0))
    rows = [{"prompt_token_ids": list(o.prompt_token_ids), "token_ids": list(o.outputs[0].token_ids)} for o in outs]
    Path(dst).write_text(json.dumps(rows))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "stock":
        _stock_main(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit("usage: python -m tests.vllm_support stock IN.json OUT.json")


def save_for_vllm(model: Any, processor: Any, path: Path) -> Path:
    """Save a tiny HF model + processor in the llava-hf layout vLLM loads; returns ``path``."""
    from zooprune.hf_layout import to_llava_hf_layout

    model.save_pretrained(path)
    processor.save_pretrained(path)
    to_llava_hf_layout(path)
    return path


@contextlib.contextmanager
def engine(model_dir: Path, **settings: Any) -> Iterator[Any]:
    """An offline vLLM engine with the plugin (``ENGINE`` settings updated by ``settings``), shut down after."""
    from vllm import LLM

    with vllm_env(VLLM_ALLOW_INSECURE_SERIALIZATION="1"):
        llm = LLM(model=str(model_dir), **{**ENGINE, **settings})
        try:
            yield llm
        finally:
            llm.llm_engine.engine_core.shutdown()
