"""Training loop: a short real run on a few Omniglot alphabets, resume, determinism, errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from conftest import MIRROR, mirror_path
from siamkit.checkpoint import RunError, load_model
from siamkit.config import Config, ConfigError, apply_overrides
from siamkit.data import load_omniglot
from siamkit.data.splits import split_by_group
from siamkit.embedding import embed_images
from siamkit.training import train


@pytest.fixture(scope="module")
def small_omniglot():
    """Six alphabets of Omniglot's background set at 28 px (real data)."""
    mirror_path("omniglot")  # skips what needs it when the mirror lacks Omniglot
    os.environ.setdefault("SIAMKIT_MIRROR", str(MIRROR))
    data = load_omniglot("background", size=28)
    return data.subset_groups(range(6))


def tiny_config(**over: str) -> Config:
    values = {"optim.steps": 40, "optim.p": 10, "optim.k": 3, "optim.warmup_steps": 5,
              "eval.every": 20, "eval.episodes": 20, "eval.way": 5, "data.val_groups": 2,
              "model.encoder_args.width": 16, "optim.threads": 2}
    values.update(over)
    return apply_overrides(Config(), [f"{k}={v}" for k, v in values.items()])


def interrupt_and_resume(cfg: Config, out: Path, data, at: int) -> None:
    """Train ``cfg`` into ``out``, stopped after step ``at`` (the state is saved there), then
    resume it to the end."""
    train(cfg, out, data=data, callbacks=[lambda s, _: s == at])
    train(cfg, out, resume=True, data=data)


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    """The model weights of a run's resumable state (its last step)."""
    from siamkit.training.state import load_state, unprefixed

    return unprefixed("model", load_state(run / "state.safetensors")[0])


def assert_same_final_weights(a: Path, b: Path) -> None:
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], msg=k)


def test_short_real_run_loss_falls_and_checkpoints(tmp_path, small_omniglot):
    cfg = tiny_config(**{"optim.steps": 90, "eval.every": 30, "optim.lr": 3e-3})
    res = train(cfg, tmp_path / "run", data=small_omniglot)
    losses = [h["loss"] for h in res.history]
    assert len(losses) == 3
    assert losses[-1] < losses[0]
    assert res.history[-1]["val_accuracy"] > 0.4  # 5-way chance is 0.2
    for name in ("model.safetensors", "config.json", "state.safetensors", "history.jsonl",
                 "train_summary.json"):
        assert (tmp_path / "run" / name).is_file()
    model, config, card = load_model(tmp_path / "run")
    assert card["input"] == {"kind": "image", "channels": 1, "size": 28, "invert": True,
                             "keep_aspect": False, "tta": 0}
    assert card["best_step"] == res.best_step
    assert config == cfg


def test_mirror_views_are_recorded_and_used_by_the_loaded_model(tmp_path, small_omniglot):
    cfg = tiny_config(**{"optim.steps": 2, "eval.every": 2, "eval.mirror": True})
    train(cfg, tmp_path / "run", data=small_omniglot)
    model, _, card = load_model(tmp_path / "run")
    assert card["input"]["mirror"] is True and model.input_spec.mirror
    images = small_omniglot.images[:4]
    mean = (embed_images(model, images, mirror=False)
            + embed_images(model, images.flip(-1), mirror=False)) / 2
    torch.testing.assert_close(embed_images(model, images), mean)


def test_same_seed_same_weights(tmp_path, small_omniglot):
    cfg = tiny_config(**{"optim.steps": 6, "eval.every": 6})
    train(cfg, tmp_path / "a", data=small_omniglot)
    train(cfg, tmp_path / "b", data=small_omniglot)
    ma, _, _ = load_model(tmp_path / "a")
    mb, _, _ = load_model(tmp_path / "b")
    for (k, va), vb in zip(ma.state_dict().items(), mb.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, msg=k)


def test_resume_continues_to_the_same_weights(tmp_path, small_omniglot):
    full = tiny_config(**{"optim.steps": 8, "eval.every": 4})
    train(full, tmp_path / "full", data=small_omniglot)
    # interrupt after 3 steps (a callback asks to stop; the state is saved there), resume to 8
    half = tiny_config(**{"optim.steps": 8, "eval.every": 4})
    train(half, tmp_path / "part", data=small_omniglot, callbacks=[lambda s, _: s == 3])
    from siamkit.training.state import load_state

    assert load_state(tmp_path / "part" / "state.safetensors")[1]["step"] == 3
    res = train(half, tmp_path / "part", resume=True, data=small_omniglot)
    assert res.steps == 8
    assert_same_final_weights(tmp_path / "full", tmp_path / "part")


@pytest.mark.parametrize("loss,miner", [("triplet", "semihard"), ("triplet", "batch_hard"),
                                        ("proxy", "none"), ("contrastive", "batch_hard"),
                                        ("triplet", "schedule"), ("contrastive", "none"),
                                        ("prototypical", "none")])
def test_each_loss_and_miner_trains(tmp_path, small_omniglot, loss, miner):
    cfg = tiny_config(**{"loss.name": loss, "loss.miner": miner, "optim.steps": 4,
                         "eval.every": 4})
    res = train(cfg, tmp_path / "r", data=small_omniglot)
    assert res.steps == 4 and all(torch.isfinite(torch.tensor(h["loss"])) for h in res.history)


def test_pair_training_with_learned_head(tmp_path, small_omniglot):
    cfg = tiny_config(**{"loss.name": "bce", "model.head": True, "optim.sampler": "pairs",
                         "optim.pair_batch": 32, "optim.steps": 4, "eval.every": 4,
                         "data.rotations": "[0, 1]"})
    res = train(cfg, tmp_path / "r", data=small_omniglot)
    model, _, _ = load_model(tmp_path / "r")
    assert model.head is not None and model.higher_is_closer
    assert 0.0 <= res.history[-1]["val_accuracy"] <= 1.0


def test_head_learning_rate_trains_and_resumes_exactly(tmp_path, small_omniglot):
    """With optim.head_lr the head moves at its own rate (after the same steps, a head
    trained at a higher rate has moved further from its start), and a run interrupted and
    resumed ends at the same weights as one run straight through."""
    over = {"loss.name": "bce", "model.head": True, "optim.sampler": "pairs",
            "optim.pair_batch": 16, "optim.steps": 6, "eval.every": 6, "optim.lr": 1e-4,
            "optim.warmup_steps": 0}
    start = train(tiny_config(**{**over, "optim.steps": 1, "optim.lr": 1e-12}),
                  tmp_path / "start", data=small_omniglot)
    assert start.steps == 1
    head0 = load_model(tmp_path / "start")[0].head.linear.weight.detach()
    moved = {}
    for name, head_lr in (("slow", "1e-4"), ("fast", "1e-2")):
        train(tiny_config(**{**over, "optim.head_lr": head_lr}), tmp_path / name,
              data=small_omniglot)
        w = load_model(tmp_path / name)[0].head.linear.weight.detach()
        moved[name] = float((w - head0).abs().sum())
    assert moved["fast"] > 10 * moved["slow"]
    interrupt_and_resume(tiny_config(**{**over, "optim.head_lr": "1e-2"}), tmp_path / "part",
                         small_omniglot, at=3)
    assert_same_final_weights(tmp_path / "fast", tmp_path / "part")


def test_validation_split_holds_out_whole_groups(small_omniglot):
    train_set, val_set = split_by_group(small_omniglot, 2, 0.0, seed=0)
    assert val_set is not None
    train_groups = {train_set.group_names[g] for g in train_set.groups}
    val_groups = {val_set.group_names[g] for g in val_set.groups}
    assert len(val_groups) == 2 and not train_groups & val_groups
    assert train_set.num_classes + val_set.num_classes == small_omniglot.num_classes


def test_bad_config_values_raise(tmp_path, small_omniglot):
    with pytest.raises(ConfigError, match="loss.name"):
        train(tiny_config(**{"loss.name": "nope"}), tmp_path / "r", data=small_omniglot)
    with pytest.raises(ConfigError, match="model.head=true"):
        train(tiny_config(**{"loss.name": "bce"}), tmp_path / "r2", data=small_omniglot)
    with pytest.raises(ConfigError, match="does not take them"):
        train(tiny_config(**{"loss.miner": "semihard"}), tmp_path / "r4", data=small_omniglot)
    with pytest.raises(ConfigError, match="hold out 9 groups"):
        train(tiny_config(**{"data.val_groups": 9}), tmp_path / "r5", data=small_omniglot)
    with pytest.raises(RunError, match="nothing to resume"):
        train(tiny_config(), tmp_path / "r3", resume=True, data=small_omniglot)


def test_time_limit_stops_early_and_keeps_a_checkpoint(tmp_path, small_omniglot):
    cfg = tiny_config(**{"optim.steps": 1000, "optim.time_limit_minutes": 0.0})
    res = train(cfg, tmp_path / "r", data=small_omniglot)
    assert res.steps == 1
    assert (tmp_path / "r" / "model.safetensors").is_file()


def test_history_file_is_jsonl(tmp_path, small_omniglot):
    train(tiny_config(**{"optim.steps": 4, "eval.every": 2}), tmp_path / "r",
          data=small_omniglot)
    lines = (tmp_path / "r" / "history.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [2, 4]


def test_existing_run_folder_is_not_mixed_with_a_new_run(tmp_path, small_omniglot):
    cfg = tiny_config(**{"optim.steps": 2, "eval.every": 2})
    train(cfg, tmp_path / "r", data=small_omniglot)
    with pytest.raises(RunError, match="already holds files"):
        train(cfg, tmp_path / "r", data=small_omniglot)
    train(cfg, tmp_path / "r", data=small_omniglot, overwrite=True)
    assert len((tmp_path / "r" / "history.jsonl").read_text().splitlines()) == 1


def test_resume_refuses_a_changed_config(tmp_path, small_omniglot):
    cfg = tiny_config(**{"optim.steps": 2, "eval.every": 2})
    train(cfg, tmp_path / "r", data=small_omniglot)
    with pytest.raises(RunError, match="optim.lr changed"):
        train(apply_overrides(cfg, ["optim.lr=0.5"]), tmp_path / "r", resume=True,
              data=small_omniglot)
    res = train(apply_overrides(cfg, ["optim.steps=4"]), tmp_path / "r", resume=True,
                data=small_omniglot)  # a longer budget is allowed
    assert res.steps == 4


def test_resume_with_the_mining_schedule_is_exact(tmp_path, small_omniglot):
    cfg = tiny_config(**{"loss.name": "triplet", "loss.miner": "schedule", "optim.steps": 6,
                         "eval.every": 3, "loss.schedule_start": 0.0, "loss.schedule_end": 1.0})
    train(cfg, tmp_path / "full", data=small_omniglot)
    interrupt_and_resume(cfg, tmp_path / "part", small_omniglot, at=2)
    assert_same_final_weights(tmp_path / "full", tmp_path / "part")


def test_split_file_is_followed_and_overlap_refused(tmp_path, small_omniglot, caplog):
    names = small_omniglot.group_names
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": names[:4], "val": names[3:5], "test": names[5:]}))
    cfg = tiny_config(**{"data.split_file": str(split), "optim.steps": 2, "eval.every": 2})
    with pytest.raises(ConfigError, match=r"1 groups are in both train and val"):
        train(cfg, tmp_path / "r", data=small_omniglot)
    split.write_text(json.dumps({"train": names[:4], "val": names[4:5], "test": names[5:]}))
    res = train(cfg, tmp_path / "r2", data=small_omniglot)
    assert res.steps == 2
    card = json.loads((tmp_path / "r2" / "config.json").read_text())
    assert card["config"]["data"]["split_file"] == str(split)
    ok = apply_overrides(cfg, ["data.allow_overlap=true"])
    split.write_text(json.dumps({"train": names[:4], "val": names[3:5], "test": []}))
    with caplog.at_level("WARNING", logger="siamkit.training"):
        assert train(ok, tmp_path / "r3", data=small_omniglot).steps == 2
    unused = len(names) - 5  # the data has groups the split file does not name: said
    assert f"{unused} are in no split and unused" in caplog.text
    missing = apply_overrides(cfg, ["data.split_file=no/such/split.json"])
    with pytest.raises(ConfigError, match=r"no/such/split.json: no such file \(relative to the "
                                          r"current directory"):
        train(missing, tmp_path / "r4", data=small_omniglot)


def test_init_from_starts_training_from_a_trained_encoder(tmp_path, small_omniglot):
    cfg = tiny_config(**{"optim.steps": 30, "eval.every": 30, "optim.lr": 3e-3})
    train(cfg, tmp_path / "source", data=small_omniglot)
    first_loss: dict[str, float] = {}

    def first(name: str):
        def record(step: int, loss: float) -> None:
            first_loss.setdefault(name, loss)
        return record

    one = apply_overrides(cfg, ["optim.steps=1", "eval.every=1"])
    train(one, tmp_path / "fresh", data=small_omniglot, callbacks=[first("fresh")])
    warm = apply_overrides(one, [f"model.init_from={tmp_path / 'source'}"])
    train(warm, tmp_path / "warm", data=small_omniglot, callbacks=[first("warm")])
    assert first_loss["warm"] < 0.7 * first_loss["fresh"]  # it already separates classes
    card = json.loads((tmp_path / "warm" / "config.json").read_text())
    assert card["config"]["model"]["init_from"] == str(tmp_path / "source")
    narrow = apply_overrides(warm, ["model.encoder_args.width=8"])
    with pytest.raises(ConfigError, match="does not fit this one: size mismatch"):
        train(narrow, tmp_path / "narrow", data=small_omniglot)
    typo = apply_overrides(one, [f"model.init_from={tmp_path / 'nope'}"])
    with pytest.raises(ConfigError, match="model.init_from: model folder not found"):
        train(typo, tmp_path / "fresh", data=small_omniglot, overwrite=True)
    assert (tmp_path / "fresh" / "model.safetensors").is_file()  # refused before deleting
    with pytest.raises(ConfigError, match="is the run folder being written"):
        train(apply_overrides(one, [f"model.init_from={tmp_path / 'warm'}"]),
              tmp_path / "warm", data=small_omniglot, overwrite=True)
    # a resumed run continues from its own state: the source is not read again
    two = apply_overrides(warm, ["optim.steps=2", "eval.every=2"])
    train(two, tmp_path / "resumed", data=small_omniglot, callbacks=[lambda s, _: s == 1])
    shutil.rmtree(tmp_path / "source")
    assert train(two, tmp_path / "resumed", resume=True, data=small_omniglot).steps == 2


def test_warm_start_warns_when_the_source_read_its_inputs_otherwise(caplog):
    from siamkit.builders import build_model
    from siamkit.checkpoint import warm_start
    from siamkit.inputs import InputSpec

    config = apply_overrides(Config(), ["model.encoder_args.width=8"])
    source = build_model(config.model, 1, 28)
    source.input_spec = InputSpec(size=28, invert=True)
    model = build_model(config.model, 1, 28)
    model.input_spec = InputSpec(size=28, invert=False)
    with caplog.at_level("WARNING", logger="siamkit.checkpoint"):
        warm_start(model, (Path("src"), source, {}))
    assert "read its inputs otherwise" in caplog.text
    state = model.encoder.state_dict()
    assert all(torch.equal(v, source.encoder.state_dict()[k]) for k, v in state.items())


def test_sampler_k_shrinks_to_the_smallest_class(caplog):
    """A config tuned on 10 images per identity still trains on data with fewer: K drops
    to the smallest class (with a warning); below what the loss needs, the sampler refuses."""
    import numpy as np

    from siamkit.builders import build_sampler

    config = apply_overrides(Config(), ["optim.p=2", "optim.k=10", "optim.steps=3"])
    labels = np.repeat([0, 1, 2], [10, 6, 8])
    with caplog.at_level("WARNING", logger="siamkit.builders"):
        sampler = build_sampler(config, labels, None, ["a", "b", "c"])
    assert sampler.k == 6 and "smallest class has 6" in caplog.text
    batch = next(iter(sampler))
    assert len(batch) == 12
    with pytest.raises(ValueError, match=r"fewer than 2 items \(e.g. 'b' with 1\)"):
        build_sampler(config, np.repeat([0, 1, 2], [10, 1, 8]), None, ["a", "b", "c"])


def test_head_learning_rate_is_its_own_group_and_follows_the_schedule():
    """optim.head_lr puts the learned head in its own parameter group; the schedule scales
    each group's peak rate, also after a resumed optimiser state is loaded."""
    from siamkit.builders import build_model
    from siamkit.config import ModelConfig
    from siamkit.training import make_optimiser, set_lr

    model = build_model(ModelConfig(encoder="mlp", encoder_args={"in_features": 8},
                                    head=True, head_features="sbert"), 1, 8)
    opt = make_optimiser(model, lr=1e-4, head_lr=1e-2)
    head = {id(p) for p in model.head.parameters()}
    assert [g["lr"] for g in opt.param_groups] == [1e-4, 1e-2]
    assert {id(p) for p in opt.param_groups[1]["params"]} == head
    assert not head & {id(p) for p in opt.param_groups[0]["params"]}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    set_lr(opt, 0.5)
    assert [g["lr"] for g in opt.param_groups] == [5e-5, 5e-3]
    again = make_optimiser(model, lr=1e-4, head_lr=1e-2)
    again.load_state_dict(opt.state_dict())  # a resumed run: the peaks are not the saved lrs
    set_lr(again, 1.0)
    assert [g["lr"] for g in again.param_groups] == [1e-4, 1e-2]
    one = make_optimiser(model, lr=1e-4)  # no head_lr: one group at lr
    assert [g["lr"] for g in one.param_groups] == [1e-4]


@pytest.mark.parametrize(("overrides", "needle"), [
    (["optim.head_lr=0.01"], "set model.head=true"),
    (["model.head=true", "loss.name=bce", "optim.head_lr=-1"], "optim.head_lr must be positive"),
])
def test_head_learning_rate_is_checked(overrides, needle):
    from siamkit.config import check_config

    with pytest.raises(ConfigError, match=needle):
        check_config(apply_overrides(Config(), overrides))
