"""``train_v2 --stop-after``: a run ends after a stage so a probe can gate the next one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from test_testbed_v2_round3 import tiny_run_argv


def _stages_logged(work) -> list[str]:
    rows = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    return sorted({r["stage"] for r in rows if "loss" in r})


def test_stop_after_clip_then_resume_runs_the_rest(tmp_path):
    from zooprune.testbed.train_v2 import TrainerV2, parse_args

    argv = tiny_run_argv(tmp_path, 2)
    first = TrainerV2(parse_args([*argv, "--stop-after", "clip"]))
    first.run()
    assert first.state["stage"] == "align" and first.state["step"] == 0
    assert _stages_logged(tmp_path / "work") == ["clip"]
    assert (tmp_path / "model" / "config.json").is_file()  # exported for the probe

    second = TrainerV2(parse_args([*argv, "--resume", "--stop-after", "align"]))
    assert second.state["stage"] == "align"
    second.run()
    assert second.state["stage"] == "qa"
    assert _stages_logged(tmp_path / "work") == ["align", "clip"]

    third = TrainerV2(parse_args([*argv, "--resume"]))
    third.run()
    assert third.state["stage"] == "done"
    assert _stages_logged(tmp_path / "work") == ["align", "clip", "qa"]
    assert any("val" in r for r in third.log)  # the final held-out evaluation ran


def test_stop_after_an_earlier_stage_on_resume_trains_nothing(tmp_path):
    """A gate command run again after its stage is past only re-exports (the script is idempotent)."""
    from zooprune.testbed.train_v2 import TrainerV2, parse_args

    argv = tiny_run_argv(tmp_path, 2)
    TrainerV2(parse_args([*argv, "--stop-after", "align"])).run()
    again = TrainerV2(parse_args([*argv, "--resume", "--stop-after", "clip"]))
    steps = again.state["step"]
    again.run()
    assert again.state["stage"] == "qa" and again.state["step"] == steps


def test_stop_after_rejects_the_last_stage():
    from zooprune.testbed.train_v2 import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--stop-after", "qa"])


def _run_script(work):
    root = Path(__file__).resolve().parents[1]
    if not (root / ".venv" / "bin" / "python").is_file():
        pytest.skip("scripts/train-testbed-v2.sh runs .venv/bin/python (scripts/setup-dev.sh)")
    return subprocess.run(
        ["bash", "scripts/train-testbed-v2.sh", str(work)], cwd=root, capture_output=True, text=True, timeout=120
    )


def test_fresh_run_script_stops_at_a_failed_tower_gate(tmp_path):
    """Probe outputs present: the script skips their steps (no training) and applies the gate."""
    work = tmp_path / "run"
    work.mkdir()
    probes = {"probes": {str(work / "model-clip"): {"column": {"acc": 0.2, "majority": 0.07}}}}
    (work / "feature_probes.json").write_text(json.dumps(probes))
    res = _run_script(work)
    assert res.returncode == 1, res.stderr
    assert "gate tower column: 0.2 (needs >= 0.50)" in res.stdout
    assert "gate tower column failed" in res.stderr
    assert not (work / "ckpt.pt").exists()


def test_fresh_run_script_stops_at_a_failed_token_gate(tmp_path):
    work = tmp_path / "run"
    work.mkdir()
    probes = {"probes": {str(work / "model-clip"): {"column": {"acc": 0.6, "majority": 0.07}}}}
    (work / "feature_probes.json").write_text(json.dumps(probes))
    (work / "validate-align.json").write_text(json.dumps({"position_probe_tokens": {"col": {"acc_all": 0.1}}}))
    res = _run_script(work)
    assert res.returncode == 1, res.stderr
    assert "gate tower column: 0.6 (needs >= 0.50)" in res.stdout
    assert "gate token column: 0.1 (needs >= 0.30)" in res.stdout
    assert "gate token column failed" in res.stderr
