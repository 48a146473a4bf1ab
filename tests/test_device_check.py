"""``scripts/device-check.sh --dry-run`` (the GPU readiness check on CPU, tiny shapes) runs and writes
the JSON the real run writes, so the script cannot rot before a GPU machine is there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zooprune.bench.device_check import Budget, budgets_for, full_cases, label, summary
from zooprune.testing.tiny import BUILDERS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("device-check")
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "device-check.sh"), "--dry-run", str(out)],
        capture_output=True, text=True, env=env, timeout=300, cwd=ROOT,
    )  # fmt: skip
    return proc, out / "device_check.json"


def test_dry_run_exits_cleanly_and_writes_json(dry_run):
    proc, path = dry_run
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    report = json.loads(path.read_text())
    assert report["meta"]["dry_run"] and report["meta"]["finished"]
    assert report["summary"]["errors"] == []
    assert report["env"]["device"] == "cpu" and report["env"]["torch"]
    assert "wrote" in proc.stdout


def test_dry_run_sads_part(dry_run):
    report = json.loads(dry_run[1].read_text())
    rows = report["sads"]["rows"]
    assert [(r["n"], r["k"]) for r in rows] == [(64, 8), (160, 16)]
    assert all(r["ms"] > 0 and r["picks_equal_cpu"] and r["overlap_with_cpu"] == 1.0 for r in rows)


def test_dry_run_every_family_checked(dry_run):
    families = json.loads(dry_run[1].read_text())["families"]
    assert set(families) == set(BUILDERS)
    for name, res in families.items():
        assert set(res["keep_all"]) == {"none", "zoo"}, name
        assert all(v["equal"] for v in res["keep_all"].values()), name  # keep-all == stock, bf16
        assert set(res["batch"]) == {"zoo", "divprune", "fastv"}, name
        for method, check in res["batch"].items():
            assert "skipped" in check or len(check["kept_equal"]) == 3, (name, method)
    assert "equal" in families["llava"]["batch"]["fastv"]  # in-LLM checked where counts are fixed


def test_dry_run_full_models(dry_run):
    full = json.loads(dry_run[1].read_text())["full"]
    assert set(full) == {"llava-1.5-7b", "llava-next-7b"}
    next_ = full["llava-next-7b"]
    assert (next_["visual_tokens"], next_["budgeted_tokens"], next_["newline_tokens"]) == (88, 80, 8)
    assert next_["attn_implementation"] == "sdpa" and next_["dtype"] == "bfloat16"
    for res in full.values():
        labels = [r["label"] for r in res["rows"]]
        assert labels == [label(c) for c in full_cases(res["budgets"])]
        base = res["rows"][0]
        for row in res["rows"]:
            assert {"prepare", "prefill", "ttft", "e2e"} <= set(row["ms"]), row["label"]
            assert row["ms"]["ttft"] >= row["ms"]["prefill"] > 0
            assert row["prefill_flops"] > 0 and row["flops_bound_speedup"] >= 1.0
            assert row["seq_len_full"] == base["seq_len_full"]
        fastv = [r for r in res["rows"] if r["method"] == "fastv"]
        assert all(r["prune_layer"] == 2 and r["equivalent_tokens"] > r["kept_tokens"] for r in fastv)


def test_budgets_and_helpers():
    assert budgets_for("llava-next-7b", 2880, dry_run=False) == [640, 320, 160]
    assert budgets_for("llava-1.5-7b", 576, dry_run=False) == [192, 128, 64]
    assert budgets_for("llava-next-7b", 80, dry_run=True) == [17, 8, 4]
    cases = full_cases([64])
    assert [label(c) for c in cases] == [
        "none", "zoo/central@64", "zoo/jvp@64", "zoo/closed-form@64", "divprune@64", "fastv@64",
    ]  # fmt: skip
    assert Budget(100).allows(10) and not Budget(1).allows(10)
    report = {"sads": {"rows": [{"n": 576, "k": 64, "ms": 1.5}]}, "families": {"x": {"error": "boom"}}}
    got = summary(report)
    assert got["sads_ms"] == {"64/576": 1.5} and got["errors"] == ["families.x: boom"]
