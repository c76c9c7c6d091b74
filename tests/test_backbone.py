"""Bring your own pretrained backbone: any image nn.Module (here a ResNet-style network
built with random weights, as torchvision or timm would give one) as the twin encoder,
frozen, partly frozen or fine-tuned, its preprocessing recorded in the model card."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

import siamkit
from conftest import MIRROR
from siamkit.inputs import InputSpec


class Block(nn.Module):
    """A ResNet basic block."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                                  nn.ReLU(), nn.Conv2d(c, c, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class TinyResNet(nn.Module):
    """A ResNet-style backbone: stem, two stages, global pooling -> (B, width)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.width = width
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2))
        self.stage1, self.stage2 = Block(width), Block(width)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stage2(self.stage1(self.stem(x)))).flatten(1)


class BackboneEncoder(nn.Module):
    """The recipe: your backbone and a small projection head, one module."""

    def __init__(self, width: int = 16, dim: int = 32) -> None:
        super().__init__()
        self.width, self.dim, self.output_dim = width, dim, dim
        self.backbone = TinyResNet(width)  # pretrained weights would be loaded here
        self.head = nn.Linear(width, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


@pytest.fixture(scope="module")
def characters():
    if not (MIRROR / "omniglot").is_dir():
        pytest.skip("Omniglot mirror not present")
    os.environ.setdefault("SIAMKIT_MIRROR", str(MIRROR))
    from siamkit.data import load_omniglot

    data = load_omniglot("background", size=28).subset_groups(range(3))
    # as a backbone's preprocessing would have it: [0, 1], then (x - mean) / std
    x = (data.images.float() / 255 - 0.1) / 0.3
    names = [data.class_names[c] for c in data.labels.tolist()]
    return list(zip(x, names, strict=True))


SPEC = InputSpec(kind="image", size=28, channels=1, invert=True, mean=[0.1], std=[0.3])


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict, module: nn.Module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


@pytest.mark.parametrize("mode", ["frozen", "partly", "fine-tuned"])
def test_a_backbone_trains_frozen_partly_frozen_or_fine_tuned(characters, tmp_path, mode):
    torch.manual_seed(0)
    enc = BackboneEncoder()
    frozen = {"frozen": [enc.backbone], "partly": [enc.backbone.stem],
              "fine-tuned": []}[mode]
    for part in frozen:
        part.requires_grad_(False)
    before = _snapshot(enc)
    net = siamkit.fit(enc, characters, loss="contrastive", steps=6, batch=(8, 4),
                      input_spec=SPEC, settings={"warmup_steps": 0, "eval_every": 6})
    changed = _changed(before, enc)
    stem = {k for k in before if k.startswith("backbone.stem.")}
    rest = {k for k in before if k.startswith("backbone.stage")}
    assert {k for k in changed if k.startswith("head.")}  # the head always learns
    if mode == "frozen":  # weights and BatchNorm statistics of the backbone stay put
        assert not changed & (stem | rest)
    elif mode == "partly":
        assert not changed & stem and changed & rest
    else:
        assert changed & stem and changed & rest
    net.save(tmp_path / "run")
    again = siamkit.load(tmp_path / "run")
    assert again.input_spec.mean == (0.1,) and again.input_spec.std == (0.3,)
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(again.embed(x), net.eval().embed(x))


def test_the_cards_preprocessing_is_applied_to_files(characters, tmp_path):
    """Files read by siamkit get the backbone's normalisation: embedding a saved image file
    equals embedding the dataset's tensor of it; the ONNX export normalises alike."""
    from PIL import Image

    from siamkit.inference import Embedder

    torch.manual_seed(0)
    net = siamkit.SiameseNetwork(BackboneEncoder(), input_spec=SPEC).eval()
    net.save(tmp_path / "run")
    from siamkit.data import load_omniglot

    raw = load_omniglot("background", size=28).images[0, 0]  # inverted uint8, as loaded
    Image.fromarray((255 - raw).numpy()).save(tmp_path / "a.png")  # the file on disk
    e = Embedder(tmp_path / "run", engine="torch", precision="fp32")
    got = e.embed_items([str(tmp_path / "a.png")])
    want = net.embed(characters[0][0][None])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    pytest.importorskip("onnxruntime")
    from siamkit.export import export_onnx

    m = export_onnx(tmp_path / "run", tmp_path / "onnx")
    assert m["parity"]["ok"] and m["input"]["mean"] == [0.1]
