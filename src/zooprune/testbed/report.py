"""Accuracy of a saved testbed model through the stock HF path, for the model card.

``python -m zooprune.testbed.report --model models/testbed-llava --n 600`` loads the model
with ``AutoProcessor`` / ``LlavaForConditionalGeneration`` (offline), builds each prompt with
the processor's chat template, and decodes greedily. Pruned variants keep a subset of the 196
projected visual tokens (original order) and generate from ``inputs_embeds``:
``random`` (uniform), ``norm`` (largest L2 norm of the projected token) and ``zero`` (none kept).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm
from transformers import AutoProcessor, LlavaForConditionalGeneration

from .data import EVAL_SEED, make_samples


def load(model_dir: str | Path) -> tuple[LlavaForConditionalGeneration, object]:
    """Model (eval mode) and processor from a local directory, no network."""
    model = LlavaForConditionalGeneration.from_pretrained(model_dir)
    model.eval()
    return model, AutoProcessor.from_pretrained(model_dir)


def prompt_inputs(processor: object, image: Image.Image, question: str) -> dict[str, torch.Tensor]:
    """Processor outputs for one image + question via the model's chat template."""
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    return processor(images=image, text=prompt, return_tensors="pt")


def _decode(processor: object, ids: torch.Tensor) -> str:
    return processor.tokenizer.decode(ids, skip_special_tokens=True).strip()


@torch.no_grad()
def answer(model: LlavaForConditionalGeneration, processor: object, image: Image.Image, question: str) -> str:
    """Greedy answer through the stock path: processor -> ``model.generate``."""
    inputs = prompt_inputs(processor, image, question)
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    return _decode(processor, out[0, inputs["input_ids"].shape[1] :])


@torch.no_grad()
def answer_pruned(
    model: LlavaForConditionalGeneration,
    processor: object,
    image: Image.Image,
    question: str,
    method: str,
    keep: float,
    seed: int,
) -> str:
    """Greedy answer keeping ``round(keep * 196)`` visual tokens chosen by ``method``."""
    inputs = prompt_inputs(processor, image, question)
    ids = inputs["input_ids"][0]
    feats = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output[0]  # [196, d]
    n = feats.shape[0]
    k = round(keep * n)
    if method == "random":
        kept = np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))
    elif method == "norm":
        kept = np.sort(torch.topk(feats.float().norm(dim=-1), k).indices.numpy())
    else:
        kept = np.array([], dtype=np.int64)
    is_img = ids == model.config.image_token_id
    first = int(is_img.nonzero()[0])
    text_emb = model.get_input_embeddings()(ids)
    emb = torch.cat([text_emb[:first], feats[torch.as_tensor(kept, dtype=torch.long)], text_emb[first + n :]])
    out = model.generate(
        inputs_embeds=emb[None].to(model.dtype),
        attention_mask=torch.ones(1, emb.shape[0], dtype=torch.long),
        max_new_tokens=3,
        do_sample=False,
    )
    return _decode(processor, out[0])


def evaluate(model_dir: str | Path, n: int, seed: int, keep: float) -> dict[str, dict[str, float]]:
    """Per-family accuracy for none / random (3 seeds) / norm at ``keep`` / zero tokens.

    Also ``none_correct_indices``: the sample indices the unpruned model answers correctly.
    """
    model, processor = load(model_dir)
    samples = make_samples(seed, n)
    configs = ["none", "random0", "random1", "random2", "norm", "zero"]
    hits: dict[str, dict[str, list[int]]] = {c: {} for c in configs}
    for i, s in enumerate(tqdm(samples, desc="report", mininterval=10)):
        for c in configs:
            if c == "none":
                pred = answer(model, processor, s.image, s.question)
            else:
                method = c.rstrip("012")
                pred = answer_pruned(
                    model,
                    processor,
                    s.image,
                    s.question,
                    method,
                    keep,
                    seed=i * 10 + int(c[-1:] or 0) if method == "random" else 0,
                )
            hits[c].setdefault(s.family, []).append(int(pred == s.answer))
    out: dict[str, dict[str, float]] = {}
    order = [s.family for s in samples]
    flat = {f: iter(v) for f, v in hits["none"].items()}
    correct = [i for i, f in enumerate(order) if next(flat[f])]
    for c, fam in hits.items():
        row = {f: float(np.mean(v)) for f, v in sorted(fam.items())}
        row["overall"] = float(np.mean([x for v in fam.values() for x in v]))
        out[c] = row
    rnd = [out[f"random{j}"] for j in range(3)]
    out["random"] = {k: float(np.mean([r[k] for r in rnd])) for k in rnd[0]}
    out["none_correct_indices"] = correct  # type: ignore[assignment]
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m zooprune.testbed.report", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/testbed-llava")
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--seed", type=int, default=EVAL_SEED)
    ap.add_argument("--keep", type=float, default=0.111)
    ap.add_argument("--output", default=None, help="write the JSON here too")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = evaluate(args.model, args.n, args.seed, args.keep)
    text = json.dumps(res, indent=1)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
