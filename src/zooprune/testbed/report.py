"""Accuracy of a saved testbed model through the stock HF path, for the model card.

``python -m zooprune.testbed.report --model models/testbed-llava --n 600`` (``--variant v2
--model models/testbed-llava-v2`` for the v2 testbed) loads the model
with ``AutoProcessor`` / ``LlavaForConditionalGeneration`` (offline), builds each prompt with
the processor's chat template, and decodes greedily. ``none`` is that stock path
(processor -> ``model.generate``). ``random`` (3 seeds) and ``norm`` (largest L2 norm of the
projected token) go through the library (:class:`zooprune.vlm.PrunedVLM` on the same model):
k = int(keep * 196) visual tokens, kept in their original order. ``zero`` (no visual tokens, not
a library budget) is the stock path on the prompt with its image placeholders removed.
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

from ..config import PruneConfig
from ..vlm import PrunedVLM
from .data import EVAL_SEED, make_samples

#: Answer length of every variant (the testbed answers with one word).
NEW_TOKENS = 3
VARIANTS = ("none", "random0", "random1", "random2", "norm", "zero")


def load_stock(model_dir: str | Path) -> tuple[LlavaForConditionalGeneration, object]:
    """Model (eval mode) and processor from a local directory, no network."""
    model = LlavaForConditionalGeneration.from_pretrained(model_dir)
    model.eval()
    return model, AutoProcessor.from_pretrained(model_dir)


def prompt_inputs(processor: object, image: Image.Image, question: str) -> dict[str, torch.Tensor]:
    """Processor outputs for one image + question via the model's chat template."""
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    return processor(images=image, text=prompt, return_tensors="pt")


@torch.no_grad()
def answer(model: LlavaForConditionalGeneration, processor: object, image: Image.Image, question: str) -> str:
    """Greedy answer through the stock path: processor -> ``model.generate``."""
    inputs = prompt_inputs(processor, image, question)
    out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    return processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


@torch.no_grad()
def answer_without_image(
    model: LlavaForConditionalGeneration, processor: object, image: Image.Image, question: str
) -> str:
    """Greedy answer with zero visual tokens: the stock prompt minus its image placeholders
    (``input_ids (1, T)`` -> ``(1, T - 196)``), no pixels, stock ``model.generate``."""
    ids = prompt_inputs(processor, image, question)["input_ids"]  # (1, T)
    text = ids[ids != model.config.image_token_id][None]  # (1, T - 196)
    out = model.generate(
        input_ids=text, attention_mask=torch.ones_like(text), max_new_tokens=NEW_TOKENS, do_sample=False
    )
    return processor.tokenizer.decode(out[0, text.shape[1] :], skip_special_tokens=True).strip()


def answer_pruned(vlm: PrunedVLM, image: Image.Image, question: str) -> str:
    """Greedy answer with the visual tokens ``vlm``'s method keeps (library budget and seed)."""
    return vlm.generate([image], [question], max_new_tokens=NEW_TOKENS, do_sample=False).texts[0]


def card_accuracy(
    model_dir: str | Path, n: int, seed: int, keep: float, variant: str = "v1"
) -> dict[str, dict[str, float]]:
    """Per-family accuracy for none / random (3 seeds) / norm at ``keep`` / zero tokens.

    Random seed ``j`` of sample ``i`` is ``10 i + j``. Also ``none_correct_indices``: the sample
    indices the unpruned model answers correctly.
    """
    model, processor = load_stock(model_dir)
    norm = PrunedVLM(model, processor, PruneConfig(method="norm", keep=keep))
    rand = PrunedVLM(model, processor, PruneConfig(method="random", keep=keep))
    if variant == "v2":
        from .questions_v2 import make_samples_v2

        samples: list = make_samples_v2(seed, n)
    else:
        samples = make_samples(seed, n)
    hits: dict[str, dict[str, list[int]]] = {c: {} for c in VARIANTS}
    correct: list[int] = []
    for i, s in enumerate(tqdm(samples, desc="report", mininterval=10)):
        preds = {
            "none": answer(model, processor, s.image, s.question),
            "norm": answer_pruned(norm, s.image, s.question),
            "zero": answer_without_image(model, processor, s.image, s.question),
        }
        for j in range(3):
            preds[f"random{j}"] = answer_pruned(rand.configure(seed=i * 10 + j), s.image, s.question)
        for c in VARIANTS:
            hits[c].setdefault(s.family, []).append(int(preds[c] == s.answer))
        if preds["none"] == s.answer:
            correct.append(i)
    out: dict[str, dict[str, float]] = {}
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
    ap.add_argument("--variant", choices=("v1", "v2"), default="v1", help="which generator asks")
    ap.add_argument("--seed", type=int, default=None, help="default: the variant's held-out eval seed")
    ap.add_argument("--keep", type=float, default=0.111)
    ap.add_argument("--output", default=None, help="write the JSON here too")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.seed is None:
        from .questions_v2 import EVAL_SEED_V2

        args.seed = EVAL_SEED_V2 if args.variant == "v2" else EVAL_SEED
    res = card_accuracy(args.model, args.n, args.seed, args.keep, args.variant)
    text = json.dumps(res, indent=1)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
