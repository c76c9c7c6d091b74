"""The tabular path: scikit-learn's digits as feature vectors through the MLP twin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from siamkit.cli import main
from siamkit.config import ConfigError, load_config

pytest.importorskip("sklearn")
ROOT = Path(__file__).resolve().parents[1]


def test_load_digits_is_float_features_of_ten_classes():
    from siamkit.data.tabular import is_tabular, load_digits

    d = load_digits()
    assert d.images.shape == (1797, 64) and d.images.dtype.is_floating_point
    assert d.class_names == [str(i) for i in range(10)] and is_tabular(d)
    assert 0.0 <= float(d.images.min()) and float(d.images.max()) <= 1.0
    assert len(d) == len(d.labels) == len(d.paths)


def test_digits_train_on_some_digits_and_one_shot_on_the_others(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--quiet", "train", "--config", str(ROOT / "configs" / "digits.yaml"),
                 "--out", str(out), "--no-progress", "--set", "optim.steps=60",
                 "--set", "data.split_file=" + str(ROOT / "configs/splits/digits.json")]) == 0
    card = json.loads((out / "config.json").read_text())
    assert card["input"] == {"kind": "tabular", "features": 64}
    assert card["config"]["model"]["encoder_args"]["in_features"] == 64
    capsys.readouterr()
    args = ["--quiet", "eval", "episodes", "--model", str(out), "--data", "sklearn:digits",
            "--split", str(ROOT / "configs/splits/digits.json"), "--way", "5", "--shot", "1",
            "--episodes", "200", "--json"]
    assert main(args) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["accuracy"] > 0.4  # chance is 0.2 on the unseen digits 5-9
    assert main(args[:-1] + ["--subset", "train", "--json"]) == 0  # the seen digits 0-4
    assert json.loads(capsys.readouterr().out)["accuracy"] > res["accuracy"]
    from siamkit.data.download import DatasetError
    from siamkit.inference import Embedder

    with pytest.raises(DatasetError, match="tabular model"):  # not served over HTTP (yet)
        Embedder(out)
    # the exported verifier takes 64 features
    pytest.importorskip("onnxruntime")
    from siamkit.export import export_onnx

    m = export_onnx(out, tmp_path / "onnx")
    assert m["input"]["kind"] == "tabular" and m["input"]["shape"] == [64]
    assert m["parity"]["ok"]
    # predict.py takes feature vectors as JSON arrays (or .npy files), without torch
    import os
    import subprocess
    import sys

    import numpy as np
    import torch

    from siamkit.checkpoint import load_model
    from siamkit.data.tabular import load_digits

    d = load_digits()
    a, b = d.images[0].numpy(), d.images[1].numpy()
    np.save(tmp_path / "b.npy", b)
    driver = ("import runpy, sys; ns = runpy.run_path(sys.argv[1]); rc = ns['main'](sys.argv[2:]);"
              " assert 'torch' not in sys.modules; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", driver, str(tmp_path / "onnx" / "predict.py"),
                        json.dumps(a.tolist()), str(tmp_path / "b.npy")], capture_output=True,
                       text=True, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert r.returncode == 0, r.stderr
    model = load_model(out)[0]
    with torch.no_grad():
        want = float(model(torch.from_numpy(a[None]), torch.from_numpy(b[None]))[0])
    assert json.loads(r.stdout)["score"] == pytest.approx(want, abs=1e-4)


def test_digits_config_errors():
    from siamkit.config import check_config

    digits = ROOT / "configs" / "digits.yaml"
    check_config(load_config(digits))
    with pytest.raises(ConfigError, match="mlp"):
        check_config(load_config(digits, ["model.encoder=conv4"]))
    with pytest.raises(ConfigError, match="augment"):
        check_config(load_config(digits, ["augment.enabled=true"]))
    with pytest.raises(ConfigError, match="feature vectors"):
        check_config(load_config(None, ["model.encoder=mlp"]))


def test_image_folder_rejected_for_a_tabular_model(tmp_path, capsys):
    from siamkit.builders import build_model
    from siamkit.checkpoint import save_model

    config = load_config(ROOT / "configs" / "digits.yaml")
    config.model.encoder_args["in_features"] = 64
    save_model(tmp_path / "img", build_model(load_config(None).model, 1, 28), load_config(None),
               {"input": {"channels": 1, "size": 28}})
    assert main(["eval", "episodes", "--model", str(tmp_path / "img"), "--data",
                 "sklearn:digits", "--way", "5", "--shot", "1"]) == 1
    assert "tabular" in capsys.readouterr().err
