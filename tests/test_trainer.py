"""The one training loop: pair runs resume exactly and train under torchrun like class runs;
state without pickle; in-memory runs keep their best weights; failed runs leave nothing."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import MIRROR
from siamkit.checkpoint import RunError
from siamkit.config import load_config
from siamkit.losses import ContrastiveLoss
from siamkit.samplers import PKSampler
from siamkit.siamese import SiameseNetwork
from siamkit.training import (
    ClassBatches,
    ClassData,
    Items,
    Trainer,
    TrainSettings,
    train,
)
from siamkit.training.state import load_state, save_state, unprefixed

AG = MIRROR / "er_magellan" / "Structured" / "Amazon-Google"


def _ag_config(tmp_path: Path, extra: str = "") -> Path:
    """A record MLP twin on a slice of Amazon-Google's real record pairs (Ditto format)."""
    if not AG.is_dir():
        pytest.skip("Amazon-Google mirror absent")
    data = tmp_path / "ag"
    data.mkdir(exist_ok=True)
    for split in ("train", "valid", "test"):
        lines = (AG / f"{split}.txt").read_text().splitlines()
        (data / f"{split}.txt").write_text("\n".join(lines[:1500 if split == "train" else 400])
                                           + "\n")
    cfg = tmp_path / "ag.yaml"
    cfg.write_text(f"data: {{dataset: ditto, root: {data}}}\n"
                   "model: {encoder: mlp, encoder_args: {hidden: [64], embedding_dim: 16},"
                   " distance: cosine}\n"
                   "loss: {name: online_contrastive, margin: 0.5, in_batch: 0.5}\n"
                   "optim: {steps: 8, pair_batch: 32, lr: 0.003, warmup_steps: 2}\n"
                   f"pairs: {{hard_negatives: 3, mine_every: 3}}\n{extra}"
                   "eval: {every: 4, calibrate_target: f1}\n")
    return cfg


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return unprefixed("model", load_state(run / "state.safetensors")[0])


def test_a_pair_run_interrupted_and_resumed_ends_at_the_same_weights(tmp_path):
    """Hard negatives mined at steps 1, 4 and 7 and in-batch negatives: a run stopped at
    step 5 (between two mining passes) and resumed ends where one run straight through
    ends."""
    config = load_config(_ag_config(tmp_path))
    full = train(config, tmp_path / "full")
    assert full.steps == 8 and full.start_metric is not None
    train(load_config(_ag_config(tmp_path)), tmp_path / "part",
          callbacks=[lambda step, _: step == 5])
    assert load_state(tmp_path / "part" / "state.safetensors")[1]["step"] == 5
    resumed = train(load_config(_ag_config(tmp_path)), tmp_path / "part", resume=True)
    assert resumed.steps == 8
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
    hist = [json.loads(x) for x in (tmp_path / "part" / "history.jsonl").read_text()
            .splitlines()]
    assert [h["step"] for h in hist] == [0, 4, 5, 8]  # the stop validates and saves
    summary = json.loads((tmp_path / "full" / "train_summary.json").read_text())
    assert summary.keys() == {"steps", "best_val_metric", "best_step", "val_metric",
                              "start_val_metric", "train_minutes", "items_per_second",
                              "world_size"}
    assert summary["val_metric"] == "f1"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_pair_run_trains_under_torchrun_like_one_process(tmp_path):
    cfg = _ag_config(tmp_path, "seed: 0\n")
    cfg.write_text(cfg.read_text().replace("steps: 8", "steps: 40").replace(
        "every: 4, calibrate_target: f1", "every: 20, calibrate_target: eer"))
    single = train(load_config(cfg), tmp_path / "single")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_port()), "-m", "siamkit.cli",
           "--quiet", "train", "--config", str(cfg), "--out", str(tmp_path / "ddp"),
           "--no-progress"]
    env = {**os.environ, "SIAMKIT_MIRROR": str(MIRROR)}
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "train_summary.json").read_text())
    assert ddp["world_size"] == 2 and ddp["steps"] == 40
    # the same global batches; BatchNorm sees each rank's half: the same kind of result
    assert ddp["best_val_metric"] > ddp["start_val_metric"]
    assert abs(ddp["best_val_metric"] - single.best_metric) < 0.1
    assert "threshold" in json.loads((tmp_path / "ddp" / "config.json").read_text())


class _Boom:
    """A pickle payload: unpickling it would write a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (self.path, "pwned"))


def _tiny_run(tmp_path: Path, steps: int = 4, **kw):
    torch.manual_seed(0)
    x = torch.rand(24, 6)
    labels = torch.arange(6).repeat_interleave(4)
    data = ClassData(Items(x), labels, [str(i) for i in range(6)])
    net = SiameseNetwork(nn.Sequential(nn.Linear(6, 4)))
    net.set_embedding_dim(4)
    sampler = PKSampler(labels.numpy(), 3, 2, steps, seed=0)
    objective = ClassBatches(data, ContrastiveLoss(), sampler)
    return Trainer(net, objective, TrainSettings(steps=steps, eval_every=2, warmup_steps=0),
                   **kw)


def test_resume_never_unpickles_a_state_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(b"")
    marker = tmp_path / "marker"
    (run / "state.pt").write_bytes(pickle.dumps(_Boom(marker)))
    with pytest.raises(RunError, match="pickle, which is not loaded"):
        _tiny_run(tmp_path, out_dir=run, resume=True).fit()
    assert not marker.exists()
    (run / "state.safetensors").write_bytes(pickle.dumps(_Boom(marker)))
    with pytest.raises(RunError, match="not a readable siamkit state"):
        _tiny_run(tmp_path, out_dir=run, resume=True).fit()
    assert not marker.exists()
    src = Path(__file__).resolve().parents[1] / "src"
    found = subprocess.run(["grep", "-rn", "torch.load(\\|pickle.load\\|allow_pickle=True",
                            str(src)], capture_output=True, text=True).stdout
    assert all("weights_only=True" in line for line in found.splitlines()), found


def test_state_round_trips_tensors_and_json(tmp_path):
    save_state(tmp_path / "s.safetensors", {"a/b": torch.arange(3)},
               {"step": 7, "rng": {"state": 2**100}})
    tensors, meta = load_state(tmp_path / "s.safetensors")
    assert tensors["a/b"].tolist() == [0, 1, 2] and meta == {"step": 7, "rng": {"state": 2**100}}


def test_in_memory_run_ends_with_its_best_weights():
    trainer = _tiny_run(Path("."))
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    scores = iter([1.0, 0.0, 0.0, 0.0])  # the start is the best
    trainer.validator = lambda model: {"auc": next(scores), "primary_metric": "auc"}
    trainer.settings.validate_first = True
    res = trainer.fit()
    assert res.best_step == 0 and res.run_dir is None and res.metric_name == "auc"
    for k, v in trainer.model.state_dict().items():
        torch.testing.assert_close(v, start[k], msg=k)


def test_threads_hold_for_the_run_only():
    """settings.threads sets torch's threads while training and gives the caller's back,
    on success and on failure."""
    before = torch.get_num_threads()
    want = 2 if before != 2 else 1
    trainer = _tiny_run(Path("."))
    trainer.settings.threads = want
    seen = []
    step = trainer.objective.step
    trainer.objective.step = lambda *a: seen.append(torch.get_num_threads()) or step(*a)
    trainer.fit()
    assert seen and set(seen) == {want} and torch.get_num_threads() == before
    trainer = _tiny_run(Path("."))
    trainer.settings.threads = want
    trainer.objective.step = lambda *a: 1 / 0
    with pytest.raises(ZeroDivisionError):
        trainer.fit()
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("keep", [True, False])
def test_keep_freed_memory_is_asked_for_only_when_set(monkeypatch, keep):
    from siamkit.training import trainer as trainer_module

    calls = []
    monkeypatch.setattr(trainer_module, "keep_freed_memory", lambda: calls.append(1) or True)
    trainer = _tiny_run(Path("."))
    trainer.settings.keep_freed_memory = keep
    trainer.fit()
    assert calls == ([1] if keep else [])


def test_a_run_that_fails_before_any_state_leaves_no_folder(tmp_path):
    trainer = _tiny_run(tmp_path, out_dir=tmp_path / "run")

    def broken(*args):
        raise ValueError("bad batch")

    trainer.objective.step = broken
    with pytest.raises(ValueError, match="step 1: bad batch"):
        trainer.fit()
    assert not (tmp_path / "run").exists()


def test_settings_are_checked():
    with pytest.raises(ValueError, match="steps must be a whole number >= 1"):
        TrainSettings(steps=0)
    with pytest.raises(ValueError, match="schedule must be one of"):
        TrainSettings(schedule="linear")
    with pytest.raises(ValueError, match="learning rates must be positive"):
        TrainSettings(lr=0.0)


def test_pair_batches_split_over_ranks_and_gather_back_in_order():
    """The gathered embeddings of a sharded pair batch are the single process's, row for
    row (left sides, then right sides), whatever the split."""
    from siamkit.training.distributed import DistInfo, pair_rows, shard_bounds

    n = 7
    bounds = shard_bounds(n, DistInfo(0, 3))
    assert bounds == [(0, 3), (3, 5), (5, 7)]
    left, right = np.arange(n), 100 + np.arange(n)
    # what ranks 0, 1, 2 embed, gathered in rank order
    gathered = np.concatenate([np.concatenate([left[a:b], right[a:b]]) for a, b in bounds])
    assert (gathered[pair_rows(bounds)] == np.concatenate([left, right])).all()
    assert shard_bounds(1, DistInfo(1, 2)) == [(0, 1), (1, 1)]  # a rank may get no pair
