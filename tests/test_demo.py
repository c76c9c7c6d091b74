"""The demo from Python: trains the preset (shrunk to a few steps), tests on Lake's runs and
writes what it returns to results.json."""

from __future__ import annotations

import json

import pytest

from conftest import MIRROR


@pytest.mark.skipif(not (MIRROR / "omniglot").is_dir(), reason="Omniglot mirror not present")
def test_run_demo_returns_what_it_writes(tmp_path, monkeypatch):
    from siamkit.demo import PUBLISHED_ERROR, RESULTS, run_demo

    monkeypatch.setenv("SIAMKIT_MIRROR", str(MIRROR))
    runs = []
    res = run_demo(tmp_path / "demo", ["optim.steps=2", "eval.every=2", "eval.episodes=5",
                                       "eval.tta=0", "model.encoder_args.width=8",
                                       "data.rotations=[0]"],
                   runs_progress=lambda stage, n: runs.append((stage, n)) or runs.append)
    assert json.loads((tmp_path / "demo" / RESULTS).read_text()) == res
    assert runs[0] == ("runs", 20) and sum(runs[1:]) == 20
    assert res["train_steps"] == 2 and len(res["per_run"]) == 20
    assert res["error"] == pytest.approx(1 - res["accuracy"])
    assert res["published_error"] == PUBLISHED_ERROR
