"""Train the testbed v2 LLaVA: ``python -m zooprune.testbed.train --variant v2 --help``.

Three stages, LLaVA-style, none of which names a token category or shapes attention:

1. ``clip``: the vision tower with an image-level objective, contrastive image-caption
   (symmetric InfoNCE) against a small text encoder reading the whole-scene description.
   Chosen over masked-image modelling because it is the objective of CLIP, the tower real
   LLaVAs use, so the feature geometry pruning methods rely on (a shared component, norm
   outliers) has the same origin; and because the text lists every region and item, so every
   part of the image is worth encoding, while pixel reconstruction would spend the small tower
   on speck and noise detail. The image embedding is the mean of the selected layer's patch
   tokens (so every visual token gets gradient, as with the ``vision_feature_layer = -1`` the
   testbed feeds to the LLM). Each image also gets a hard negative: the description of the
   same scene with one region or item changed, so a coarse colour histogram does not suffice.
2. ``align``: vision frozen, per-channel standardisation fitted (folded into the projector at
   export, as v1), then the projector and the Llama learn to generate the whole-scene
   description after "describe the scene" (next-token loss on the description). The Llama is
   trained too by default since it starts from scratch (``--align-projector-only`` freezes it).
3. ``qa``: projector + Llama (and, at ``--lr-vision-qa``, the vision tower) on packed v2
   questions (all eight families, 6 per image), 6 % of images shown with no visual tokens, and
   v1's auxiliary grounding loss on layer-1 attention (``--ground``; the patches of the items or
   the background region a question is about; none for whole-scene questions), faded out by 65 %
   of the stage. Both were added after a first run without them stayed at answer priors
   (docs/testbed-v2.md, "Training runs": per-patch probes found digits and shapes missing from
   the tower's features, and the LLM ignoring what the features did hold). Optional drills
   replace a share of the questions: text-only letter lookups (``--choice-drill``) and
   single-item place questions (``--place-drill``), each added after a probe showed the step
   missing (docs/testbed-v2.md, runs 3 and 4).

Time-based per stage; ``--max-steps`` caps each stage (tests). Checkpoints in ``--work``
(``ckpt.pt``, every ``--save-every`` minutes and at each stage end) let ``--resume`` continue;
``log.jsonl`` holds the learning curves (train loss per stage, held-out accuracy in ``qa``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .batches import pixels
from .evaluate import ValItem, validation_accuracy
from .model import VISION_HIDDEN, build_model
from .packing import Standardize, lm_forward, pack, project, vision_features
from .processor import build_processor
from .questions_v2 import (
    TRAIN_SEED_BASE_V2,
    VAL_SEED_V2,
    make_samples_v2,
    vocabulary_v2,
)
from .scenes import GRID
from .stream_v2 import NEGATIVES, STAGES, V2Stream, pad, text_ids
from .tower_v2 import (
    EMBED,
    RECON_DIM,
    TextEncoder,
    clip_loss,
    position_table,
    recon_loss,
    set_fixed_positions,
)
from .trainkit import cosine, export_model, ground_weight, token_ids

ALIGN_PROMPT = "describe the scene"
ROUND_SEEDS = 10_000  # training round r (--restart-clip) draws its data from seed + r * ROUND_SEEDS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m zooprune.testbed.train --variant v2", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--out", default="models/testbed-llava-v2", help="final model + processor dir")
    ap.add_argument("--work", default="runs/testbed-v2", help="checkpoints and logs")
    ap.add_argument("--clip-minutes", type=float, default=20.0)
    ap.add_argument("--align-minutes", type=float, default=25.0)
    ap.add_argument("--qa-minutes", type=float, default=60.0)
    ap.add_argument("--max-steps", type=int, default=0, help="cap on steps per stage (0: time only)")
    ap.add_argument("--seed", type=int, default=0, help="init seed; data from TRAIN_SEED_BASE_V2 + seed")
    ap.add_argument("--resume", action="store_true", help="continue from --work/ckpt.pt")
    ap.add_argument("--batch-clip", type=int, default=48)
    ap.add_argument("--batch-align", type=int, default=16)
    ap.add_argument("--batch-qa", type=int, default=16)
    ap.add_argument("--qa", type=int, default=6, help="questions per image in the qa stage")
    ap.add_argument("--lr-clip", type=float, default=1e-3)
    ap.add_argument("--lr-align", type=float, default=1e-3)
    ap.add_argument("--lr-qa", type=float, default=7e-4)
    ap.add_argument(
        "--lr-vision-qa", type=float, default=3e-4, help="vision tower lr in qa (0: frozen, as in align)"
    )
    ap.add_argument(
        "--ground", type=float, default=1.0, help="grounding-loss weight in qa before fading (0: off)"
    )
    ap.add_argument(
        "--restart-qa",
        action="store_true",
        help="with --resume in qa (or after it): keep the weights, restart the qa clock, schedule and"
        " optimiser",
    )
    ap.add_argument(
        "--restart-clip",
        action="store_true",
        help="with --resume: a new round from the clip stage on the trained weights (fresh clocks,"
        " optimisers and data; the fitted standardisation is kept; skip align with --align-minutes 0)",
    )
    ap.add_argument(
        "--hard-negatives",
        choices=sorted(NEGATIVES),
        default="basic",
        help="clip hard negatives: basic (one colour / texture / shape changed, runs 1-2) or layout"
        " (also a digit changed, two regions' contents or two items' places swapped)",
    )
    ap.add_argument(
        "--choice-drill",
        type=float,
        default=0.0,
        help="share of qa questions replaced by a text-only letter lookup (stream_v2.choice_drill)",
    )
    ap.add_argument(
        "--place-drill",
        type=float,
        default=0.0,
        help="share of qa questions replaced by a single-item place question about the same image"
        " (stream_v2.place_drill: left / right, top / bottom), the step before two-item spatial ones",
    )
    ap.add_argument(
        "--fixed-position",
        type=float,
        default=0.0,
        help="write fixed 2-D sin-cos position embeddings of this row norm into the tower and never"
        " train them (0: the learned table, runs 1-2); pass it again on every --resume",
    )
    ap.add_argument(
        "--recon",
        type=float,
        default=0.0,
        help="weight of the clip stage's patch-reconstruction term (tower_v2.recon_loss; 0: off)",
    )
    ap.add_argument("--align-projector-only", action="store_true", help="freeze the Llama in align")
    ap.add_argument(
        "--stop-after",
        choices=STAGES[:-1],
        help="end after this stage (checkpoint + export to --out) so a probe can gate the next one;"
        " the same command with --resume and without it continues",
    )
    ap.add_argument("--eval-every", type=float, default=5.0, help="minutes between held-out evals (qa)")
    ap.add_argument("--val-n", type=int, default=400)
    ap.add_argument("--save-every", type=float, default=4.0, help="minutes between checkpoints")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1, help="DataLoader workers (0: in process)")
    ap.add_argument("--export-only", action="store_true")
    return ap.parse_args(argv)


# ------------------------------------------------------------------------------------ trainer
class TrainerV2:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        torch.set_num_threads(args.threads)
        torch.manual_seed(args.seed)
        self.work = Path(args.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.processor = build_processor(vocabulary_v2())
        self.tok = self.processor.tokenizer
        self.ids = token_ids(self.tok)
        self.model = build_model(self.tok, args.seed)
        self.model.set_attn_implementation("eager")
        self.text = TextEncoder(len(self.tok), self.tok.pad_token_id)
        self.img_head = nn.Linear(VISION_HIDDEN, EMBED)
        self.recon_head = nn.Linear(VISION_HIDDEN, RECON_DIM)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.std = Standardize(VISION_HIDDEN)
        self.state: dict[str, Any] = {"stage": "clip", "step": 0, "t": {s: 0.0 for s in STAGES}}
        self.log: list[dict[str, Any]] = []
        self.opt = self._make_opt("clip")
        self.val: list[ValItem] = []
        if (args.resume or args.export_only) and (self.work / "ckpt.pt").exists():
            self._load()
        if args.fixed_position > 0:
            set_fixed_positions(self.model.model.vision_tower, args.fixed_position)

    def _tower_params(self) -> list[nn.Parameter]:
        """The vision tower's trained parameters (without the position table if it is fixed)."""
        tower = self.model.model.vision_tower
        fixed = position_table(tower).weight if self.args.fixed_position > 0 else None
        return [q for q in tower.parameters() if q is not fixed]

    def _make_opt(self, stage: str) -> torch.optim.Optimizer:
        m = self.model.model
        if stage == "clip":
            heads = [*self.img_head.parameters(), *(self.recon_head.parameters() if self.args.recon else [])]
            params = [*self._tower_params(), *self.text.parameters(), *heads]
            groups = [{"params": params}, {"params": [self.logit_scale], "weight_decay": 0.0}]
            return torch.optim.AdamW(groups, lr=self.args.lr_clip, weight_decay=0.05)
        params = list(m.multi_modal_projector.parameters())
        if stage == "qa" or not self.args.align_projector_only:
            params += [*m.language_model.parameters(), *self.model.lm_head.parameters()]
        lr = self.args.lr_align if stage == "align" else self.args.lr_qa
        groups = [{"params": params, "base_lr": lr}]
        if stage == "qa" and self.args.lr_vision_qa > 0:
            m.vision_tower.requires_grad_(True)
            groups.append({"params": self._tower_params(), "base_lr": self.args.lr_vision_qa})
        return torch.optim.AdamW(groups, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))

    def blob(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "model": self.model.state_dict(),
            "text": self.text.state_dict(),
            "img_head": self.img_head.state_dict(),
            "recon_head": self.recon_head.state_dict(),
            "logit_scale": self.logit_scale.detach().clone(),
            "std": self.std.state_dict(),
            "opt": self.opt.state_dict(),
            "log": self.log,
        }

    def save(self) -> None:
        tmp = self.work / "ckpt.tmp"
        torch.save(self.blob(), tmp)
        tmp.replace(self.work / "ckpt.pt")

    def _load(self) -> None:
        blob = torch.load(self.work / "ckpt.pt", weights_only=False)
        self.state, self.log = blob["state"], blob["log"]
        self.model.load_state_dict(blob["model"])
        self.text.load_state_dict(blob["text"])
        self.img_head.load_state_dict(blob["img_head"])
        if "recon_head" in blob:  # checkpoints before the reconstruction term have none
            self.recon_head.load_state_dict(blob["recon_head"])
        with torch.no_grad():
            self.logit_scale.copy_(blob["logit_scale"])
        self.std.load_state_dict(blob["std"])
        if self.args.restart_clip:
            if self.args.restart_qa:
                raise ValueError("--restart-clip and --restart-qa exclude each other")
            rnd = self.state.get("round", 0) + 1
            self.state = {"stage": "clip", "step": 0, "t": {s: 0.0 for s in STAGES}, "round": rnd}
            self._record({"stage": "clip", "step": 0, "restart_clip": vars(self.args), "round": rnd})
            self.opt = self._make_opt("clip")
            print(f"new round {rnd} from clip on the trained weights", flush=True)
            return
        stage = self.state["stage"]
        if stage != "clip":
            self._freeze_vision()
            self.opt = self._make_opt("qa" if stage == "done" else stage)
        if stage in ("qa", "done") and self.args.restart_qa:
            if stage == "done":  # more qa on a finished model: the data goes on where qa stopped
                self.state.update(stage="qa", step=self.state.get("qa_steps", 0))
            self.state["t"]["qa"] = 0.0  # the data stream goes on from state["step"] (no batch repeats)
            self._record({"stage": "qa", "step": self.state["step"], "restart_qa": vars(self.args)})
        else:
            self.opt.load_state_dict(blob["opt"])
        print(f"resumed at {self.state}", flush=True)

    def _record(self, row: dict[str, Any]) -> None:
        self.log.append(row)
        with (self.work / "log.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")

    def _loader(self, stage: str, start: int) -> Iterator[dict[str, Any]]:
        batch = {"clip": self.args.batch_clip, "align": self.args.batch_align, "qa": self.args.batch_qa}[
            stage
        ]
        seed = TRAIN_SEED_BASE_V2 + self.args.seed + ROUND_SEEDS * self.state.get("round", 0)
        a = self.args
        ds = V2Stream(stage, seed, start, batch, self.tok, a.qa, a.hard_negatives, a.choice_drill, a.place_drill)
        if self.args.workers == 0:
            return iter(ds)
        return iter(
            torch.utils.data.DataLoader(
                ds,
                batch_size=None,
                num_workers=self.args.workers,
                worker_init_fn=lambda _: torch.set_num_threads(1),
            )
        )

    def _freeze_vision(self) -> None:
        vt = self.model.model.vision_tower
        vt.eval()
        vt.requires_grad_(False)

    # -------------------------------------------------------------------------- step functions
    def step_clip(self, b: dict[str, Any]) -> dict[str, float]:
        self.model.model.vision_tower.train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            feats = vision_features(self.model, b["pixel_values"])
        img = F.normalize(self.img_head(feats.float().mean(1)), dim=-1)
        pos = self.text(pad(b["text"], self.tok.pad_token_id))
        neg = self.text(pad(b["negative"], self.tok.pad_token_id))
        loss = clip_loss(img, pos, neg, self.logit_scale.clamp(max=math.log(100.0)).exp())
        extra = {}
        if self.args.recon:
            rec = recon_loss(self.recon_head, feats, b["pixel_values"])
            loss = loss + self.args.recon * rec
            extra["recon"] = float(rec.detach())
        with torch.no_grad():
            sims = img @ torch.cat([pos, neg]).T
            acc = float((sims.argmax(1) == torch.arange(img.shape[0])).float().mean())
            hard = float((sims.diagonal() > (img * neg).sum(-1)).float().mean())
        return {"loss": loss, "i2t_acc": acc, "vs_negative": hard, **extra}

    def align_batch(self, b: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Input ids, labels (-100 off the description) and 2-D attention mask of an align batch."""
        n_img = GRID * GRID
        prompt = text_ids(self.tok, ALIGN_PROMPT)
        i = self.ids
        seqs, labels = [], []
        for text in b["text"]:
            head = [i.bos, i.user, i.colon] + [i.image] * n_img + prompt + [i.assistant, i.colon]
            seqs.append(head + text + [i.eos])
            labels.append([-100] * len(head) + text + [i.eos])
        ids = pad(seqs, i.pad)
        return ids, pad(labels, -100), (ids != i.pad).long()

    def step_align(self, b: dict[str, Any]) -> dict[str, float]:
        ids, labels, mask = self.align_batch(b)
        lm = self.model.model.language_model
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with torch.no_grad():
                feats = vision_features(self.model, b["pixel_values"])
            img = project(self.model, self.std, feats.float())
            emb = lm.embed_tokens(ids)
            emb = torch.cat([emb[:, :3], img.to(emb.dtype), emb[:, 3 + img.shape[1] :]], 1)
            h = lm(inputs_embeds=emb, attention_mask=mask).last_hidden_state
            logits = self.model.lm_head(h[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
        with torch.no_grad():
            valid = labels[:, 1:] != -100
            acc = float((logits.argmax(-1)[valid] == labels[:, 1:][valid]).float().mean())
        return {"loss": loss, "token_acc": acc}

    def step_qa(self, b: dict[str, Any], frac: float = 1.0) -> dict[str, float]:
        """Answer loss + 0.2 x the eos after it + the faded grounding loss (``frac``: of the stage)."""
        rows = [
            ([] if drop else list(range(GRID * GRID)), qas) for drop, qas in zip(b["drop"].tolist(), b["qas"])
        ]
        p = pack(self.ids, rows)
        gw = ground_weight(frac, self.args.ground)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with torch.set_grad_enabled(self.args.lr_vision_qa > 0):
                feats = vision_features(self.model, b["pixel_values"])
            img = project(self.model, self.std, feats.float())
            la, le, att = lm_forward(self.model, img, p, attentions=gw > 0)
        loss_a = F.cross_entropy(la.float(), p.answers)
        loss = loss_a + 0.2 * F.cross_entropy(le.float(), torch.full_like(p.answers, self.ids.eos))
        out = {"answer_loss": float(loss_a.detach())}
        if att is not None:
            has = p.ground.sum(-1) > 0  # questions with a target (not whole-scene ones)
            if has.any():
                # -log of layer-1 attention mass on the target patches (v1's rule, train.Trainer)
                g_loss = -torch.log((att[has] * p.ground[has]).sum(-1) + 1e-4).mean()
                loss = loss + gw * g_loss
                out["ground_loss"] = float(g_loss.detach())
            out["ground_w"] = gw
        out["train_acc"] = float((la.argmax(-1) == p.answers).float().mean())
        return {"loss": loss, **out}

    # -------------------------------------------------------------------------- stages
    def fit_standardisation(self) -> None:
        """Per-channel mean / std of the frozen tower's features on 4 training batches."""
        data = V2Stream("clip", TRAIN_SEED_BASE_V2 + self.args.seed + 500, 0, 16, self.tok)
        feats = []
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            for k in range(4):
                px = data.make_batch(k)["pixel_values"]
                feats.append(vision_features(self.model, px).float().reshape(-1, VISION_HIDDEN))
        f = torch.cat(feats)
        self.std.mean.copy_(f.mean(0))
        self.std.std.copy_(f.std(0) + 1e-5)

    def run_stage(self, stage: str) -> None:
        args = self.args
        budget = 60 * {"clip": args.clip_minutes, "align": args.align_minutes, "qa": args.qa_minutes}[stage]
        base_lr = {"clip": args.lr_clip, "align": args.lr_align, "qa": args.lr_qa}[stage]
        step_fn = {"clip": self.step_clip, "align": self.step_align, "qa": self.step_qa}[stage]
        data = self._loader(stage, self.state["step"])
        bar = tqdm(
            total=int(budget), desc=f"{stage} (s)", initial=int(self.state["t"][stage]), mininterval=10
        )
        last_save = last_eval = time.time()
        params = [q for grp in self.opt.param_groups for q in grp["params"]]
        run: dict[str, float] = {}
        steps_here = 0
        while self.state["t"][stage] < budget and not (args.max_steps and steps_here >= args.max_steps):
            t0 = time.time()
            frac = self.state["t"][stage] / budget
            for g in self.opt.param_groups:
                g["lr"] = g.get("base_lr", base_lr) * cosine(frac)
            out = self.step_qa(next(data), frac) if stage == "qa" else step_fn(next(data))
            self.opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            self.opt.step()
            self.state["t"][stage] += time.time() - t0
            self.state["step"] += 1
            steps_here += 1
            for k, v in out.items():
                x = float(v.detach()) if torch.is_tensor(v) else float(v)
                run[k] = x if k not in run else 0.95 * run[k] + 0.05 * x
            bar.update(int(self.state["t"][stage]) - bar.n)
            if self.state["step"] % 10 == 0 or steps_here == 1:
                row = {"stage": stage, "step": self.state["step"], "t": round(self.state["t"][stage], 1)}
                row.update({k: round(v, 4) for k, v in run.items()})
                self._record(row)
                bar.set_postfix({k: f"{v:.3f}" for k, v in run.items()})
            if stage == "qa" and time.time() - last_eval > args.eval_every * 60:
                self.evaluate()
                last_eval = time.time()
            if time.time() - last_save > args.save_every * 60:
                self.save()
                last_save = time.time()
        bar.close()
        nxt = STAGES[STAGES.index(stage) + 1] if stage != "qa" else "done"
        self.state[f"{stage}_steps"] = self.state["step"]
        if stage == "clip":
            self._freeze_vision()
            if not self.state.get("round"):  # a later round keeps the projector's input scaling
                self.fit_standardisation()
        self.state.update(stage=nxt, step=0)
        if nxt != "done":
            self.opt = self._make_opt(nxt)
        self.save()

    def evaluate(self) -> dict[str, float]:
        if not self.val:
            self.val = [
                ValItem(pixels(s.image), s.question, s.answer, s.family)
                for s in make_samples_v2(VAL_SEED_V2, self.args.val_n)
            ]
        acc = validation_accuracy(self.model, self.std, self.ids, self.tok, self.val)
        row = {"stage": "qa", "step": self.state["step"], "t": round(self.state["t"]["qa"], 1), "val": acc}
        self._record(row)
        tqdm.write("[val] " + " ".join(f"{k}={v:.3f}" for k, v in acc.items()))
        return acc

    def run(self) -> None:
        for stage in STAGES:
            if self.state["stage"] == stage:
                self.run_stage(stage)
            if stage == self.args.stop_after:
                break  # a gate: the checkpoint now starts the next stage
        if self.state["stage"] == "done":
            self.evaluate()
        self.export()

    def export(self) -> None:
        export_model(self.model, self.std, self.processor, Path(self.args.out))
        (self.work / "final_log.json").write_text(json.dumps(self.log))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    trainer = TrainerV2(args)
    if args.export_only:
        trainer.export()
    else:
        trainer.run()


__all__ = ["STAGES", "TrainerV2", "main", "parse_args"]
