"""Train the testbed LLaVA from scratch on CPU: ``python -m zooprune.testbed.train --help``.

Recipe (see models/testbed-llava/README.md):

1. Stage 1: the vision tower alone, with dense per-patch linear heads on its selected layer
   (item kind, colour, shape, size, digit, and the patch's own row / column).
2. Per-channel standardisation of the vision features (later folded into the projector).
3. Stage 2: vision frozen; projector + Llama trained on packed questions (6 per image), with
   an auxiliary grounding loss on layer-1 attention that is faded out before the end, and 6 %
   of the images shown with no visual tokens at all.

Time-based: ``--minutes`` is the whole budget; checkpoints every few minutes in ``--work``
let a killed run continue with ``--resume``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .batches import SceneStream
from .data import TRAIN_SEED_BASE
from .evaluate import VAL_SEED, val_samples, validation_accuracy
from .model import VISION_HIDDEN, build_model
from .packing import Standardize, lm_forward, pack, project, vision_features
from .processor import build_processor
from .scenes import COLOURS, DIGITS, GRID, KINDS, SHAPES, SIZES
from .trainkit import cosine, export_model, ground_weight, token_ids

HEADS: dict[str, int] = {
    "kind": len(KINDS),
    "colour": len(COLOURS),
    "shape": len(SHAPES),
    "size": len(SIZES),
    "digit": len(DIGITS),
    "row": GRID,
    "col": GRID,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m zooprune.testbed.train", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--variant",
        choices=("v1", "v2"),
        default="v1",
        help="v1: this recipe (default); v2: see zooprune.testbed.train_v2 (its own options)",
    )
    ap.add_argument("--out", default="models/testbed-llava", help="final model + processor dir")
    ap.add_argument("--work", default="runs/testbed", help="checkpoints and logs")
    ap.add_argument("--minutes", type=float, default=95.0, help="total training budget")
    ap.add_argument("--stage1-minutes", type=float, default=11.0)
    ap.add_argument("--seed", type=int, default=0, help="init seed; data come from TRAIN_SEED_BASE + seed")
    ap.add_argument("--resume", action="store_true", help="continue from --work/ckpt.pt")
    ap.add_argument("--batch1", type=int, default=32, help="images per stage-1 step")
    ap.add_argument("--batch2", type=int, default=16, help="images per stage-2 step")
    ap.add_argument("--qa", type=int, default=6, help="questions per image in stage 2")
    ap.add_argument("--lr1", type=float, default=1e-3)
    ap.add_argument("--lr2", type=float, default=1e-3)
    ap.add_argument("--ground", type=float, default=1.0, help="grounding loss weight before fading")
    ap.add_argument(
        "--family-weights",
        default="existence=1,attribute=1,counting=1,spatial=1,reading=1,choice=1",
        help="relative frequency of each question family in stage-2 training",
    )
    ap.add_argument("--eval-every", type=float, default=5.0, help="minutes between held-out evals")
    ap.add_argument("--val-n", type=int, default=300)
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)"
    )
    ap.add_argument(
        "--export-only", action="store_true", help="save --out from the checkpoint in --work and exit"
    )
    return ap.parse_args(argv)


class Trainer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        torch.set_num_threads(args.threads)
        self.work = Path(args.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.processor = build_processor()
        self.tok = self.processor.tokenizer
        self.ids = token_ids(self.tok)
        self.model = build_model(self.tok, args.seed)
        self.model.set_attn_implementation("eager")
        self.heads = nn.ModuleDict({k: nn.Linear(VISION_HIDDEN, n) for k, n in HEADS.items()})
        self.std = Standardize(VISION_HIDDEN)
        self.state: dict[str, Any] = {"stage": 1, "step": 0, "t1": 0.0, "t2": 0.0, "step2": 0}
        self.log: list[dict[str, Any]] = []
        self.opt: torch.optim.Optimizer = self._stage1_opt()
        self.val = val_samples(VAL_SEED, args.val_n)
        if (args.resume or args.export_only) and (self.work / "ckpt.pt").exists():
            self._load()

    # ---------------------------------------------------------------- checkpoints
    def _stage1_opt(self) -> torch.optim.Optimizer:
        params = list(self.model.model.vision_tower.parameters()) + list(self.heads.parameters())
        return torch.optim.AdamW(params, lr=self.args.lr1, weight_decay=0.05)

    def _stage2_opt(self) -> torch.optim.Optimizer:
        params = (
            list(self.model.model.multi_modal_projector.parameters())
            + list(self.model.model.language_model.parameters())
            + list(self.model.lm_head.parameters())
        )
        return torch.optim.AdamW(params, lr=self.args.lr2, weight_decay=0.01, betas=(0.9, 0.98))

    def save(self) -> None:
        blob = {
            "state": self.state,
            "model": self.model.state_dict(),
            "heads": self.heads.state_dict(),
            "std": self.std.state_dict(),
            "opt": self.opt.state_dict(),
            "log": self.log,
        }
        tmp = self.work / "ckpt.tmp"
        torch.save(blob, tmp)
        tmp.replace(self.work / "ckpt.pt")

    def _load(self) -> None:
        blob = torch.load(self.work / "ckpt.pt", weights_only=False)
        self.state, self.log = blob["state"], blob["log"]
        self.model.load_state_dict(blob["model"])
        self.heads.load_state_dict(blob["heads"])
        self.std.load_state_dict(blob["std"])
        if self.state["stage"] >= 2:
            self.opt = self._stage2_opt()
        self.opt.load_state_dict(blob["opt"])
        print(f"resumed at {self.state}", flush=True)

    def _record(self, row: dict[str, Any]) -> None:
        self.log.append(row)
        with (self.work / "log.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")

    def _loader(self, stage: int, start: int) -> Any:
        batch = self.args.batch1 if stage == 1 else self.args.batch2
        weights = {k: float(v) for k, v in (kv.split("=") for kv in self.args.family_weights.split(","))}
        ds = SceneStream(
            stage, TRAIN_SEED_BASE + self.args.seed, start, batch, self.tok, self.args.qa, weights
        )
        return iter(
            torch.utils.data.DataLoader(
                ds, batch_size=None, num_workers=1, worker_init_fn=lambda _: torch.set_num_threads(1)
            )
        )

    # ---------------------------------------------------------------- stage 1
    def stage1(self) -> None:
        budget = self.args.stage1_minutes * 60
        vt = self.model.model.vision_tower
        vt.train()
        data = self._loader(1, self.state["step"])
        bar = tqdm(total=int(budget), desc="stage1 (s)", initial=int(self.state["t1"]), mininterval=10)
        last_save = time.time()
        while self.state["t1"] < budget:
            t0 = time.time()
            b = next(data)
            for g in self.opt.param_groups:
                g["lr"] = self.args.lr1 * cosine(self.state["t1"] / budget)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                feats = vision_features(self.model, b["pixel_values"])  # [B, 196, d]
            feats = feats.float()
            n = feats.shape[0]
            pos = torch.arange(GRID * GRID)
            targets = dict(b)
            targets["row"] = (pos // GRID).expand(n, -1)
            targets["col"] = (pos % GRID).expand(n, -1)
            loss = torch.zeros(())
            accs = {}
            for k, head in self.heads.items():
                logits = head(feats)
                y = targets[k]
                loss = loss + F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100
                )
                valid = y != -100
                accs[k] = float((logits.argmax(-1)[valid] == y[valid]).float().mean()) if valid.any() else 0.0
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vt.parameters(), 1.0)
            self.opt.step()
            dt = time.time() - t0
            self.state["t1"] += dt
            self.state["step"] += 1
            bar.update(int(self.state["t1"]) - bar.n)
            if self.state["step"] % 20 == 0:
                row = {
                    "stage": 1,
                    "step": self.state["step"],
                    "t": round(self.state["t1"], 1),
                    "loss": float(loss),
                }
                row.update({k: round(v, 3) for k, v in accs.items()})
                bar.set_postfix(loss=f"{float(loss):.3f}", colour=accs["colour"], digit=accs["digit"])
                self._record(row)
            if time.time() - last_save > 240:
                self.save()
                last_save = time.time()
        bar.close()
        self._start_stage2()

    def _start_stage2(self) -> None:
        """Freeze vision, fit the feature standardisation, switch optimiser."""
        vt = self.model.model.vision_tower
        vt.eval()
        vt.requires_grad_(False)
        data = self._loader(1, 10**7)
        feats = []
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            for _ in range(4):
                feats.append(
                    vision_features(self.model, next(data)["pixel_values"]).float().reshape(-1, VISION_HIDDEN)
                )
        f = torch.cat(feats)
        self.std.mean.copy_(f.mean(0))
        self.std.std.copy_(f.std(0) + 1e-5)
        self.state.update(stage=2, step=0)
        self.opt = self._stage2_opt()
        self.save()

    # ---------------------------------------------------------------- stage 2
    def stage2(self) -> None:
        budget = (self.args.minutes - self.args.stage1_minutes) * 60
        self.model.model.vision_tower.requires_grad_(False)
        self.model.model.vision_tower.eval()
        data = self._loader(2, self.state["step"])
        bar = tqdm(total=int(budget), desc="stage2 (s)", initial=int(self.state["t2"]), mininterval=10)
        last_save = last_eval = time.time()
        run_loss, run_acc, run_g = 0.0, 0.0, 0.0
        while self.state["t2"] < budget:
            t0 = time.time()
            frac = self.state["t2"] / budget
            gw = ground_weight(frac, self.args.ground)
            b = next(data)
            for g in self.opt.param_groups:
                g["lr"] = self.args.lr2 * cosine(frac)
            rows = [
                ([] if drop else list(range(GRID * GRID)), qas)
                for drop, qas in zip(b["drop"].tolist(), b["qas"])
            ]
            p = pack(self.ids, rows)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                with torch.no_grad():
                    feats = vision_features(self.model, b["pixel_values"])
                img = project(self.model, self.std, feats.float())
                la, le, att = lm_forward(self.model, img, p, attentions=gw > 0)
            loss_a = F.cross_entropy(la.float(), p.answers)
            loss_e = F.cross_entropy(le.float(), torch.full_like(p.answers, self.ids.eos))
            loss = loss_a + 0.2 * loss_e
            g_loss = torch.zeros(())
            if att is not None:
                has = p.ground.sum(-1) > 0
                if has.any():
                    mass = (att[has] * p.ground[has]).sum(-1)
                    g_loss = -torch.log(mass + 1e-4).mean()
                    loss = loss + gw * g_loss
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([q for grp in self.opt.param_groups for q in grp["params"]], 1.0)
            self.opt.step()
            self.state["t2"] += time.time() - t0
            self.state["step"] += 1
            run_loss = 0.95 * run_loss + 0.05 * float(loss_a.detach())
            run_acc = 0.95 * run_acc + 0.05 * float((la.argmax(-1) == p.answers).float().mean())
            run_g = 0.95 * run_g + 0.05 * float(g_loss.detach())
            bar.update(int(self.state["t2"]) - bar.n)
            if self.state["step"] % 10 == 0:
                bar.set_postfix(
                    loss=f"{run_loss:.3f}", acc=f"{run_acc:.3f}", g=f"{run_g:.2f}", gw=f"{gw:.2f}"
                )
            if self.state["step"] % 50 == 0:
                self._record(
                    {
                        "stage": 2,
                        "step": self.state["step"],
                        "t": round(self.state["t2"], 1),
                        "loss": round(run_loss, 4),
                        "train_acc": round(run_acc, 4),
                        "ground_loss": round(run_g, 3),
                        "ground_w": round(gw, 3),
                    }
                )
            if time.time() - last_eval > self.args.eval_every * 60:
                self.evaluate()
                last_eval = time.time()
            if time.time() - last_save > 240:
                self.save()
                last_save = time.time()
        bar.close()
        self.state["stage"] = 3
        self.save()

    def evaluate(self) -> dict[str, float]:
        acc = validation_accuracy(self.model, self.std, self.ids, self.tok, self.val)
        row = {"stage": 2, "step": self.state["step"], "t": round(self.state["t2"], 1), "val": acc}
        self._record(row)
        tqdm.write(
            f"[val t2={self.state['t2'] / 60:.1f}m] " + " ".join(f"{k}={v:.3f}" for k, v in acc.items())
        )
        return acc

    # ---------------------------------------------------------------- export
    def export(self) -> None:
        """Fold the standardisation into the projector's first layer and save (bf16)."""
        export_model(self.model, self.std, self.processor, Path(self.args.out))
        (self.work / "final_log.json").write_text(json.dumps(self.log))

    def run(self) -> None:
        if self.state["stage"] == 1:
            self.stage1()
        if self.state["stage"] == 2:
            self.stage2()
        self.evaluate()
        self.export()


def main(argv: list[str] | None = None) -> None:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--variant", choices=("v1", "v2"), default="v1")
    known, rest = pre.parse_known_args(argv)
    if known.variant == "v2":
        from .train_v2 import main as main_v2

        main_v2(rest)
        return
    args = parse_args(argv)
    trainer = Trainer(args)
    if args.export_only:
        trainer.export()
    else:
        trainer.run()


if __name__ == "__main__":
    main()
