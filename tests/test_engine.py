"""The ONNX Runtime engine: exported once per model, checked against PyTorch at start-up,
the same embeddings through every input kind; auto falls back to PyTorch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import siamkit
from conftest import make_text_run
from siamkit.builders import build_model
from siamkit.config import Config
from siamkit.inference import Embedder
from siamkit.inputs import InputSpec

pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SIAMKIT_DATA", str(tmp_path / "cache"))


def _image_run(tmp_path, mean=None, std=None):
    config = Config()
    config.model.encoder_args = {"width": 8}
    torch.manual_seed(0)
    model = build_model(config.model, 1, 28).eval()
    model.input_spec = InputSpec(size=28, invert=True, mean=mean, std=std)
    return model.save(tmp_path / "run")


@pytest.mark.parametrize("norm", [None, ([0.4], [0.3])])
def test_images_embed_alike_on_both_engines(tmp_path, norm):
    mean, std = norm if norm else (None, None)
    run = _image_run(tmp_path, mean, std)
    fast, slow = Embedder(run, engine="onnx"), Embedder(run, engine="torch")
    assert (fast.engine, slow.engine) == ("onnx", "torch")
    x = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8)
    torch.testing.assert_close(fast.embed_batch(x), slow.embed_batch(x), atol=1e-5, rtol=1e-5)
    assert list((tmp_path / "cache" / "onnx").iterdir())  # exported once, kept by model id
    again = Embedder(run, engine="auto")  # the onnx extra is installed: ONNX Runtime
    assert again.engine == "onnx"
    # files named on a command line go through the chosen engine too
    from PIL import Image

    Image.fromarray(x[0, 0].numpy()).save(tmp_path / "a.png")
    calls = []
    embed = fast.runner.embed
    fast.runner.embed = lambda batch: calls.append(len(batch)) or embed(batch)
    torch.testing.assert_close(fast.embed_items([str(tmp_path / "a.png")]),
                               slow.embed_items([str(tmp_path / "a.png")]), atol=1e-5,
                               rtol=1e-5)
    assert calls


def test_texts_embed_alike_on_both_engines(tmp_path):
    run = make_text_run(tmp_path / "text", max_seq_length=24)
    fast, slow = Embedder(run, engine="onnx"), Embedder(run, engine="torch")
    texts = ["a man plays a guitar", "stocks fell sharply", "x"]
    torch.testing.assert_close(fast.embed_texts(texts), slow.embed_texts(texts), atol=1e-5,
                               rtol=1e-5)


class Branchy(nn.Module):
    """An encoder whose forward depends on the data: it does not export."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 4)
        self.output_dim = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x.flatten(1))
        return h if float(h.sum()) > 0 else -h


def test_auto_falls_back_to_torch_and_onnx_refuses(tmp_path, caplog):
    from siamkit.export import ExportError
    from siamkit.siamese import SiameseNetwork

    net = SiameseNetwork(Branchy(), input_spec=InputSpec(size=28))
    net.save(tmp_path / "run")
    with caplog.at_level("WARNING", logger="siamkit.engine"):
        auto = Embedder(tmp_path / "run", engine="auto")
    assert auto.engine == "torch" and "embedding with PyTorch" in caplog.text
    # falling back from ONNX keeps the precision asked for
    from siamkit.engine import Autocast

    assert isinstance(Embedder(tmp_path / "run", engine="auto", precision="bf16").runner,
                      Autocast)
    with pytest.raises(ExportError, match="does not export to ONNX"):
        Embedder(tmp_path / "run", engine="onnx")
    with pytest.raises(ValueError, match="engine must be one of"):
        Embedder(tmp_path / "run", engine="tpu")


def test_an_export_finishing_second_keeps_the_first_processes_copy(tmp_path, monkeypatch):
    """Replicas starting together export at once: the one renaming second leaves the
    first's folder (already being read) as it is, and no temporary folder."""
    import siamkit.engine as engine

    model = siamkit.load(_image_run(tmp_path))
    folder = tmp_path / "cache" / "onnx" / "m"
    real = engine._export

    def racing(*args, **kwargs):
        real(*args, **kwargs)
        folder.mkdir(parents=True)
        (folder / "encoder.onnx").write_bytes(b"theirs")

    monkeypatch.setattr(engine, "_export", racing)
    engine._write(model, folder)
    assert (folder / "encoder.onnx").read_bytes() == b"theirs"
    assert sorted(p.name for p in folder.parent.iterdir()) == ["m"]
