"""The ``zooprune`` model for lmms-eval: any family ``zooprune.load`` knows, pruned by any method.

Importing this module needs lmms-eval (``pip install "zooprune[eval]"``, see docs/lmms-eval.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from accelerate import Accelerator
from lmms_eval import utils as lmms_utils
from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from loguru import logger
from PIL import Image
from tqdm import tqdm

from ...vlm import load
from ..accounting import RequestTokens, RunLedger, rank_path
from ..args import merge_cli_config, parse_model_args
from ..batching import make_batches, restore_order, settings_key
from ..runner import GenerationSettings, generate_batch, loglikelihood_batch


def flatten_visuals(visuals: Any) -> list[Image.Image]:
    """``doc_to_visual``'s output as a flat list of PIL images (videos and audio are refused)."""
    out: list[Image.Image] = []
    stack = [visuals] if not isinstance(visuals, (list, tuple)) else list(visuals)
    for item in stack:
        if item is None:
            continue
        if isinstance(item, (list, tuple)):
            out.extend(flatten_visuals(item))
        elif isinstance(item, Image.Image):
            out.append(item)
        else:
            raise NotImplementedError(
                f"the zooprune model takes images only; the task gave a {type(item).__name__} (video or audio?)"
            )
    return out


def pick_device(requested: str | None, accelerator: Accelerator) -> str:
    """One device per process: the launcher's GPU under ``accelerate launch``, else as requested."""
    if accelerator.num_processes > 1 and (requested is None or requested == "cuda"):
        return str(accelerator.device)
    if requested is not None:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


class ZooPrune(lmms):
    """lmms-eval model running a Hugging Face VLM with pruned visual tokens.

    model_args: ``pretrained=PATH,method=zoo,keep=64,seed=0,batch_size=8,device=cuda,dtype=float16``
    plus method options (``estimator=central``, ``num_directions=64``, ...) and ``report=PATH``
    (a JSON summary of visual tokens per document). Each answer carries lmms-eval token counts
    (input = text + kept visual tokens), so ``--log_samples`` runs show the saving in the results file.
    """

    is_simple = True

    def __init__(self, pretrained: str, **kwargs: Any) -> None:
        super().__init__()
        self.args = parse_model_args({"pretrained": pretrained, **kwargs})
        accelerator = Accelerator()
        device = pick_device(self.args.device, accelerator)
        self.vlm = load(
            self.args.pretrained,
            method=self.args.method,
            keep=self.args.keep,
            seed=self.args.seed,
            device=device,
            dtype=self.args.dtype,
            trust_remote_code=self.args.trust_remote_code,
            fidelity=self.args.fidelity,  # type: ignore[arg-type]
            **self.args.options,
        )
        self.accelerator = accelerator
        self._rank = accelerator.process_index
        self._world_size = accelerator.num_processes
        self._device = torch.device(device)
        self.ledger = RunLedger.empty(self.vlm.config.method, self.vlm.config.keep)
        if self._rank == 0:
            logger.info(
                f"zooprune: {self.vlm.adapter.__class__.__name__} from {self.args.pretrained}, "
                f"method={self.vlm.config.method} keep={self.vlm.config.keep} fidelity={self.vlm.config.fidelity} batch_size={self.args.batch_size} "
                f"on {device} x {self._world_size}"
            )

    @classmethod
    def create_from_arg_string(
        cls, arg_string: str, additional_config: dict[str, Any] | None = None
    ) -> ZooPrune:
        """Like lmms-eval's, but a ``batch_size``/``device`` in model_args overrides the CLI's."""
        parsed = lmms_utils.simple_parse_args_string(arg_string)
        return cls(**merge_cli_config(parsed, additional_config or {}))

    # ---- properties lmms-eval reads ----------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.args.batch_size

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def model(self) -> torch.nn.Module:
        return self.vlm.model

    @property
    def tokenizer(self) -> Any:
        return self.vlm.processor.tokenizer

    # ---- helpers -------------------------------------------------------------------------
    def _doc(self, task: str, split: str, doc_id: int) -> Any:
        return self.task_dict[task][split][doc_id]

    def _images(
        self, doc_to_visual: Callable[[Any], Any], task: str, split: str, doc_id: int
    ) -> list[Image.Image]:
        return flatten_visuals(doc_to_visual(self._doc(task, split, doc_id)))

    def _record(self, task: str, split: str, doc_id: int, kind: str, tokens: RequestTokens) -> TokenCounts:
        self.ledger.add(task, split, doc_id, kind, tokens)
        return TokenCounts(input_tokens=tokens.input_tokens, output_tokens=tokens.output_tokens)

    def _write_report(self) -> None:
        if self.args.report:
            path = self.ledger.write(rank_path(self.args.report, self._rank, self._world_size))
            total = self.ledger.summary()["total"]
            logger.info(
                f"zooprune: {total['requests']} requests, visual tokens {total['visual_tokens_before']} -> "
                f"{total['visual_tokens_after']}; summary in {path}"
            )

    @staticmethod
    def _by_modality(images: Sequence[list[Image.Image]]) -> list[list[int]]:
        """Positions in a batch with images, then without (each runs as its own forward pass)."""
        with_images = [i for i, im in enumerate(images) if im]
        without = [i for i, im in enumerate(images) if not im]
        return [part for part in (with_images, without) if part]

    # ---- lmms-eval interface ---------------------------------------------------------------
    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        """Answer generation requests in batches of ``batch_size`` with equal task and settings."""
        items = [req.args for req in requests]
        batches = make_batches(
            items,
            self.batch_size,
            key=lambda a: (a[4], a[5], settings_key(a[1])),
            length=lambda a: len(a[0]),
        )
        outputs: list[list[GenerationResult]] = []
        for batch in tqdm(batches, disable=self._rank != 0, desc="zooprune generate"):
            chunk = [items[i] for i in batch.indices]
            settings = GenerationSettings.from_task(chunk[0][1], self.args.max_new_tokens)
            images = [self._images(a[2], a[4], a[5], a[3]) for a in chunk]
            answers: list[GenerationResult | None] = [None] * len(chunk)
            for part in self._by_modality(images):
                results = generate_batch(
                    self.vlm, [chunk[i][0] for i in part], [images[i] for i in part], settings
                )
                for i, (text, tokens) in zip(part, results):
                    _, _, _, doc_id, task, split = chunk[i]
                    counts = self._record(task, split, doc_id, "generate_until", tokens)
                    answers[i] = GenerationResult(text=text, token_counts=counts)
            outputs.append(answers)
        self._write_report()
        return restore_order(batches, outputs, len(items))

    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        """Score each target after its pruned prompt: ``(loss, is_greedy)`` as lmms-eval's models do.

        ``loss`` is the mean negative log-likelihood per target token, the convention of
        lmms-eval's own models (its multiple-choice scoring takes the argmin). Each answer is a
        ``GenerationResult`` whose ``text`` is that pair: lmms-eval 0.7 unwraps the object as it
        is, where a bare tuple would be turned into a string.
        """
        items = [req.args for req in requests]
        batches = make_batches(
            items, self.batch_size, key=lambda a: (a[4], a[5]), length=lambda a: len(a[0]) + len(str(a[1]))
        )
        outputs: list[list[GenerationResult]] = []
        for batch in tqdm(batches, disable=self._rank != 0, desc="zooprune loglikelihood"):
            chunk = [items[i] for i in batch.indices]
            targets = [
                a[1] if isinstance(a[1], str) else str(a[1](self._doc(a[4], a[5], a[3]))) for a in chunk
            ]
            images = [self._images(a[2], a[4], a[5], a[3]) for a in chunk]
            answers: list[GenerationResult | None] = [None] * len(chunk)
            for part in self._by_modality(images):
                results = loglikelihood_batch(
                    self.vlm,
                    [chunk[i][0] for i in part],
                    [targets[i] for i in part],
                    [images[i] for i in part],
                )
                for i, score in zip(part, results):
                    _, _, _, doc_id, task, split = chunk[i]
                    counts = self._record(task, split, doc_id, "loglikelihood", score.tokens)
                    pair = (score.mean_nll, score.greedy)
                    answers[i] = GenerationResult(text=pair, token_counts=counts)  # type: ignore[arg-type]
            outputs.append(answers)
        self._write_report()
        return restore_order(batches, outputs, len(items))

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError(
            "the zooprune model does not implement multi-round generation yet; "
            "use single-turn tasks (generate_until or loglikelihood)"
        )
