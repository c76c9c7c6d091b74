"""Precision for the hardware: auto is bf16 only on CPUs that compute it natively; bf16
embeddings stay close to fp32 and come back as float32."""

from __future__ import annotations

import pytest
import torch

from siamkit import precision
from siamkit.builders import build_model
from siamkit.config import Config
from siamkit.precision import in_precision, native_bf16, resolve_precision


def test_auto_is_fp32_without_native_bf16_and_bf16_with_it(monkeypatch):
    assert resolve_precision("auto", {"avx2", "fma"}) == "fp32"  # an AVX2 EPYC
    monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")
    assert resolve_precision("auto", {"avx512f", "amx_bf16"}) == "bf16"  # a Xeon with AMX
    assert native_bf16({"avx512_bf16"}) and not native_bf16({"avx512f"})
    # the flags this machine reports decide auto, through the one reader
    monkeypatch.setattr(precision.machine, "cpu_flags", lambda: frozenset({"sse4_2", "avx2"}))
    assert resolve_precision("auto") == "fp32"
    assert resolve_precision("fp32", {"amx_bf16"}) == "fp32"
    assert resolve_precision("bf16", set()) == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16")


def test_bf16_embeddings_are_float32_and_close_to_fp32():
    torch.manual_seed(0)
    config = Config()
    config.model.encoder_args = {"width": 16}
    model = build_model(config.model, 1, 28).eval()
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        full = in_precision(model.embed, "fp32")(x)
        half = in_precision(model.embed, "bf16")(x)
    assert half.dtype == torch.float32
    rel = float((half - full).norm() / full.norm())
    assert 0 < rel < 0.05  # bf16 keeps 8 bits of mantissa: close, not equal


def test_training_runs_in_bf16_and_the_setting_is_checked():
    from torch import nn

    from siamkit.losses import ContrastiveLoss
    from siamkit.samplers import PKSampler
    from siamkit.siamese import SiameseNetwork
    from siamkit.training import ClassBatches, ClassData, Items, Trainer, TrainSettings

    assert TrainSettings().precision == "auto"
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainSettings(precision="half")
    torch.manual_seed(0)
    labels = torch.arange(6).repeat_interleave(4)
    data = ClassData(Items(torch.rand(24, 6)), labels, [str(i) for i in range(6)])
    net = SiameseNetwork(nn.Linear(6, 4))
    net.set_embedding_dim(4)
    before = net.encoder.weight.detach().clone()
    objective = ClassBatches(data, ContrastiveLoss(), PKSampler(labels.numpy(), 3, 2, 5))
    res = Trainer(net, objective, TrainSettings(steps=5, eval_every=5, warmup_steps=0,
                                                precision="bf16")).fit()
    assert res.steps == 5 and torch.isfinite(torch.tensor(res.history[-1]["loss"]))
    assert not torch.equal(before, net.encoder.weight)
