"""Learning curves of a v2 training run: ``python -m zooprune.testbed.curves --log LOG --out PNG``.

Reads the run's history (``final_log.json`` written at export, or ``log.jsonl``; rows as
``train_v2.TrainerV2._record`` writes them) and draws one panel per stage: the training metrics
against the stage's minutes, and in ``qa`` the held-out accuracy per question family. A
``--restart-qa`` marker row starts a new qa segment and a ``--restart-clip`` marker a new segment
of every stage (their clocks restart at 0); each segment is drawn with its own line style.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

TRAIN_METRICS = {"clip": ("i2t_acc", "vs_negative"), "align": ("token_acc",), "qa": ("train_acc",)}


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``final_log.json`` (a JSON list) or a ``log.jsonl`` (one object per line)."""
    text = Path(path).read_text()
    return (
        json.loads(text) if text.lstrip().startswith("[") else [json.loads(x) for x in text.splitlines() if x]
    )


def segments(rows: list[dict[str, Any]], stage: str) -> list[list[dict[str, Any]]]:
    """The rows of ``stage`` split where its clock restarted: at each ``restart_clip`` marker (a
    new round restarts every stage) and, for qa, at each ``restart_qa`` marker. Empty ones dropped."""
    out: list[list[dict[str, Any]]] = [[]]
    for r in rows:
        if "restart_clip" in r or (stage == "qa" and "restart_qa" in r):
            out.append([])
        elif r.get("stage") == stage:
            out[-1].append(r)
    return [s for s in out if s]


def qa_segments(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """:func:`segments` of the qa stage."""
    return segments(rows, "qa")


def plot_curves(rows: list[dict[str, Any]], out: str | Path) -> Path:
    """One PNG: clip / align training metrics, qa training accuracy, qa held-out accuracy per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    styles = (":", "-", "--", "-.")
    for ax, stage in zip(axes[:2], ("clip", "align")):
        for k, seg in enumerate(segments(rows, stage)):
            stage_rows = [r for r in seg if "loss" in r]
            for key in TRAIN_METRICS[stage]:
                ax.plot(
                    [r["t"] / 60 for r in stage_rows],
                    [r[key] for r in stage_rows],
                    styles[k % 4],
                    label=f"{key} (segment {k + 1})",
                )
        ax.set(title=f"{stage} (training batches)", xlabel="stage minutes", ylim=(0, 1))
        ax.legend(fontsize=7)
    for k, seg in enumerate(qa_segments(rows)):
        train = [r for r in seg if "train_acc" in r]
        axes[2].plot(
            [r["t"] / 60 for r in train],
            [r["train_acc"] for r in train],
            styles[k % 4],
            label=f"qa segment {k + 1}",
        )
        val = [r for r in seg if "val" in r]
        if not val:
            continue
        for fam in sorted(val[0]["val"]):
            axes[3].plot(
                [r["t"] / 60 for r in val],
                [r["val"][fam] for r in val],
                styles[k % 4],
                marker="o",
                lw=2.5 if fam == "overall" else 1,
                label=fam if k == len(qa_segments(rows)) - 1 else None,
            )
    axes[2].set(title="qa (training batches)", xlabel="qa minutes (per segment)", ylim=(0, 1))
    axes[2].legend()
    axes[3].set(
        title="qa held-out accuracy (validation seed)", xlabel="qa minutes (per segment)", ylim=(0, 1)
    )
    axes[3].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m zooprune.testbed.curves", description=__doc__.split("\n")[0])
    ap.add_argument("--log", default="runs/testbed-v2/final_log.json", help="final_log.json or log.jsonl")
    ap.add_argument("--out", default="models/testbed-llava-v2/learning_curves.png")
    args = ap.parse_args(argv)
    print(plot_curves(read_log(args.log), args.out))


if __name__ == "__main__":
    main()
