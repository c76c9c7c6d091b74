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

    with pytest.raises(DatasetError, match="tabular model on raw feature vectors"):
        Embedder(out)
    capsys.readouterr()
    assert main(["enroll", "--model", str(out), "--gallery", str(tmp_path / "g"), "--label",
                 "x", "[0, 1]"]) == 1  # not an image, and this model takes no JSON rows
    assert "train on a table" in capsys.readouterr().err
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
    r = subprocess.run([sys.executable, "-c", driver, str(tmp_path / "onnx" / "predict.py"),
                        '{"p0": 1}', str(tmp_path / "b.npy")], capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert r.returncode != 0 and "takes feature vectors" in r.stderr


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


def _write_table(path: Path, header: list[str], rows: list[list[object]], sep: str = ",") -> Path:
    path.write_text("\n".join(sep.join(str(v) for v in r) for r in [header, *rows]) + "\n")
    return path


def test_read_table_reads_any_class_column_and_refuses_bad_tables(tmp_path):
    from siamkit.data.download import DatasetError
    from siamkit.data.tabular import read_table

    good = _write_table(tmp_path / "t.csv", ["id", "height", "colour", "species"],
                        [[1, 2.5, "red", "a"], [2, "", "blue", "b"], [3, 4.0, "red", "a"]])
    records, labels = read_table(good, "species", ["height", "colour"])
    assert labels == ["a", "b", "a"]
    assert records[1] == {"height": "", "colour": "blue"}  # a missing value stays empty
    records, _ = read_table(good, "species")  # every column but the class
    assert list(records[0]) == ["id", "height", "colour"]
    tsv = _write_table(tmp_path / "t.tsv", ["x", "label"], [[1, "p"], [2, "q"]], sep="\t")
    assert read_table(tsv)[1] == ["p", "q"]
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"x": 1, "label": 7}\n{"x": 2, "label": 8}\n')
    assert read_table(jsonl) == ([{"x": "1"}, {"x": "2"}], ["7", "8"])

    with pytest.raises(DatasetError, match="not found"):
        read_table(tmp_path / "nope.csv")
    (tmp_path / "e.csv").write_text("x;label\n1,5;a\n2,5;b\n")  # a European CSV
    with pytest.raises(DatasetError, match="separated by semicolons"):
        read_table(tmp_path / "e.csv")
    (tmp_path / "t.dat").write_text("x,label\n1,a\n")
    with pytest.raises(DatasetError, match="format comes from its suffix: name it .csv"):
        read_table(tmp_path / "t.dat")
    with pytest.raises(DatasetError, match="no label column 'label'"):
        read_table(good)
    with pytest.raises(DatasetError, match="no feature column 'weight'"):
        read_table(good, "species", ["weight"])
    with pytest.raises(DatasetError, match="cannot be a feature"):
        read_table(good, "species", ["height", "species"])
    blank = _write_table(tmp_path / "b.csv", ["x", "label"], [[1, "p"], [2, ""]])
    with pytest.raises(DatasetError, match="row 2: empty class"):
        read_table(blank)
    one = _write_table(tmp_path / "o.csv", ["x", "label"], [[1, "p"], [2, "p"]])
    with pytest.raises(DatasetError, match="1 class.* at least 2 needed"):
        read_table(one)
    assert read_table(one, min_classes=1)[1] == ["p", "p"]  # one new class to enroll
    index = _write_table(tmp_path / "i.csv", ["", "x", "label"], [[0, 1, "p"], [1, 2, "q"]])
    with pytest.raises(DatasetError, match="a column has no name .*index=False"):
        read_table(index)
    twice = _write_table(tmp_path / "d.csv", ["x", "x", "label"], [[0, 1, "p"], [1, 2, "q"]])
    with pytest.raises(DatasetError, match="column 'x' appears twice"):
        read_table(twice)
    ragged = tmp_path / "r.csv"
    ragged.write_text("x,label\n1,p\n2,3,q\n")
    with pytest.raises(DatasetError, match="row 2 under the header: 3 fields, the header has 2"):
        read_table(ragged)
    latin = tmp_path / "l.csv"
    latin.write_bytes("x,label\n1,caf\xe9\n2,b\n".encode("latin-1"))
    with pytest.raises(DatasetError, match="l.csv: not UTF-8 text .* save it as UTF-8"):
        read_table(latin)
    jsonl.write_text('\ufeff{"x": 1, "label": 7}\n{"x": 2, "label": 8}\n')  # a BOM
    assert read_table(jsonl)[1] == ["7", "8"]
    jsonl.write_text('{"x": 1, "x": 2, "label": 7}\n')
    with pytest.raises(DatasetError, match="line 1: not a JSON row .*'x' appears twice"):
        read_table(jsonl)
    jsonl.write_text('{"x": 1, "label": 7}\n{"x": [2, 3], "label": 8}\n')
    with pytest.raises(DatasetError, match="line 2: column 'x' holds a list"):
        read_table(jsonl)
    with pytest.raises(DatasetError, match="no rows"):
        read_table(_write_table(tmp_path / "h.csv", ["x", "label"], []))


def test_a_table_trains_with_a_featuriser_fitted_on_training_rows_only(tmp_path, capsys,
                                                                       caplog):
    """The digits written as a CSV (with a row id left out of the features) train the MLP
    twin through data.dataset=table; the card's featuriser is fitted on the training digits
    0-4 alone; eval episodes featurise the same file as training did."""
    import yaml

    from siamkit.data.records import RecordFeaturizer
    from siamkit.data.tabular import load_digits, read_table

    d = load_digits()
    pixels = [f"p{i}" for i in range(64)]
    table = _write_table(tmp_path / "digits.csv", ["row", *pixels, "digit"],
                         [[i, *(f"{v:g}" for v in x.tolist()), d.class_names[int(y)]]
                          for i, (x, y) in enumerate(zip(d.images, d.labels, strict=True))])
    split = ROOT / "configs/splits/digits.json"
    config = yaml.safe_load((ROOT / "configs" / "digits.yaml").read_text())
    config["data"] = {"dataset": "table", "root": str(table), "label_column": "digit",
                      "feature_columns": pixels, "split_file": str(split)}
    (tmp_path / "table.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    assert main(["--quiet", "train", "--config", str(tmp_path / "table.yaml"), "--out",
                 str(out), "--no-progress", "--set", "optim.steps=60"]) == 0
    inp = json.loads((out / "config.json").read_text())["input"]
    assert inp["kind"] == "tabular" and inp["label_column"] == "digit"
    assert sorted(inp["feature_columns"]) == sorted(pixels)  # the row id is not a feature
    records, labels = read_table(table, "digit", pixels)
    train_rows = [r for r, y in zip(records, labels, strict=True) if y in "01234"]
    want = RecordFeaturizer().fit(train_rows).to_dict()
    assert inp["featurizer"] == want
    assert want != RecordFeaturizer().fit(records).to_dict()  # the test digits would shift it
    assert inp["features"] == RecordFeaturizer.from_dict(want).dim

    capsys.readouterr()
    args = ["--quiet", "eval", "episodes", "--model", str(out), "--data", str(table),
            "--split", str(split), "--way", "5", "--shot", "1", "--episodes", "200", "--json"]
    assert main(args) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["accuracy"] > 0.4  # chance is 0.2 on the unseen digits 5-9
    assert main(args[:5] + ["--data", "sklearn:digits"] + args[7:]) == 1  # not its features
    assert "not this model" in capsys.readouterr().err
    assert main(args + ["--group-depth", "1"]) == 1  # no folders in a table
    assert "a table's rows have neither" in capsys.readouterr().err
    with caplog.at_level("WARNING", logger="siamkit"):
        assert main([a for a in args if a not in ("--split", str(split))]) == 0
    assert "no --split: every class of" in caplog.text
    capsys.readouterr()
    # verification on every pair of rows: a threshold fitted on the training digits'
    # pairs, then applied frozen to the unseen digits' pairs
    pairs = ["--model", str(out), "--data", str(table), "--all-pairs", "--split", str(split)]
    assert main(["--quiet", "calibrate", *pairs, "--subset", "train", "--target", "far=0.05",
                 "--json"]) == 0
    cal = json.loads(capsys.readouterr().out)
    n = sum(y in "01234" for y in labels)
    assert cal["validation"]["pairs"] == n * (n - 1) // 2
    assert cal["validation"]["far"] == pytest.approx(0.05, abs=0.01)
    assert main(["--quiet", "eval", "verification", *pairs, "--json"]) == 0
    ver = json.loads(capsys.readouterr().out)
    m = len(labels) - n
    assert ver["positives"] + ver["negatives"] == m * (m - 1) // 2
    assert ver["threshold"] == pytest.approx(cal["threshold"]) and 0.6 < ver["auc"] <= 1
    assert main(["eval", "verification", "--model", str(out), "--pairs", str(table)]) == 1
    assert "--all-pairs" in capsys.readouterr().err
    assert main(["--quiet", "eval", "retrieval", "--model", str(out), "--data", str(table),
                 "--split", str(split), "--json"]) == 0
    ret = json.loads(capsys.readouterr().out)
    assert ret["queries"] == m and ret["classes"] == 5 and ret["recall@1"] > 0.5
    assert main(["--quiet", "eval", "identification", "--model", str(out), "--gallery-from",
                 str(table), "--queries", str(table), "--shots", "1", "--json"]) == 0
    ident = json.loads(capsys.readouterr().out)  # the enrolled first rows are not queries
    assert ident["known_queries"] == len(labels) - 10 and ident["rank1"] > 0.3
    short = _write_table(tmp_path / "short.csv", ["p0", "digit"], [[0, "5"], [1, "6"]])
    assert main(args[:5] + ["--data", str(short)] + args[7:]) == 1  # refused, not zero-filled
    assert "no feature column 'p1'" in capsys.readouterr().err
    # a gallery of table rows: one reference a class from the file, a new class from a row
    # given as JSON, identified without retraining
    gallery = str(tmp_path / "gallery")
    assert main(["--quiet", "enroll", "--model", str(out), "--gallery", gallery,
                 "--from-folder", str(table), "--shots", "1"]) == 0
    assert "enrolled 10 references" in capsys.readouterr().out
    nines = [i for i, y in enumerate(labels) if y == "9"]
    row = records[max(nines)]  # not the first shot of its class
    assert main(["--quiet", "enroll", "--model", str(out), "--gallery", gallery, "--label",
                 "new", json.dumps(row), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["classes"] == 11
    assert main(["--quiet", "identify", "--model", str(out), "--gallery", gallery,
                 json.dumps(row), "--json"]) == 0
    best = json.loads(capsys.readouterr().out)["results"][0]["matches"][0]
    assert best["label"] == "new" and best["score"] == pytest.approx(0.0, abs=1e-5)
    assert main(["identify", "--model", str(out), "--gallery", gallery,
                 json.dumps({**row, "row": 0})]) == 1
    assert "column 'row' is not one of the model's" in capsys.readouterr().err
    assert main(["--quiet", "identify", "--model", str(out), "--gallery", gallery,  # class
                 json.dumps({**row, "digit": "9"}), "--json"]) == 0  # column: ignored
    assert json.loads(capsys.readouterr().out)["results"][0]["matches"][0] == best
    for bad, why in (("{}", "no column of the model's"), ("p0 3", "as JSON objects"),
                     ("[1, 2]", "as JSON objects"), ('{"p0": 1', "not a JSON object"),
                     ('{"p0": 1, "p0": 2}', "column 'p0' appears twice"),
                     ('{"p0": "abc"}', "'abc' is not one")):
        assert main(["identify", "--model", str(out), "--gallery", gallery, bad]) == 1
        assert why in capsys.readouterr().err, bad
    # a file of one new class's rows enrolls (training would need two classes)
    one = _write_table(tmp_path / "new.csv", ["digit", *pixels],
                       [["ten", *(records[i][p] for p in pixels)] for i in nines[1:3]])
    assert main(["--quiet", "enroll", "--model", str(out), "--gallery", gallery,
                 "--from-folder", str(one), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["classes"] == 12
    long = _write_table(tmp_path / "long.csv", ["digit", *pixels],
                        [["x" * 300, *(records[i][p] for p in pixels)] for i in nines[1:3]])
    fresh = tmp_path / "fresh"
    assert main(["enroll", "--model", str(out), "--gallery", str(fresh), "--from-folder",
                 str(long)]) == 1
    assert "(300 characters): a label must be at most 256" in capsys.readouterr().err
    assert not fresh.exists()  # a failed enroll leaves no empty gallery behind
    with pytest.raises(SystemExit):  # argparse: --shots is at least 1
        main(["enroll", "--model", str(out), "--gallery", gallery, "--from-folder",
              str(one), "--shots", "0"])
    assert "--shots: 0: give at least 1" in capsys.readouterr().err

    pytest.importorskip("onnxruntime")  # the export ships the featuriser beside the graph
    from siamkit.export import export_onnx

    m = export_onnx(out, tmp_path / "onnx")
    assert m["input"]["featurizer"] == want and m["parity"]["ok"]
    assert m["input"]["feature_columns"] == inp["feature_columns"]
    # predict.py featurises JSON rows itself (no torch, no siamkit) as siamkit does
    import os
    import subprocess
    import sys

    a, b = json.dumps({**records[0], "digit": "0"}), json.dumps({**records[nines[0]], "p3": ""})
    capsys.readouterr()
    assert main(["--quiet", "verify", "--model", str(out), a, b, "--json"]) == 0
    want_score = json.loads(capsys.readouterr().out)["score"]
    driver = ("import runpy, sys; ns = runpy.run_path(sys.argv[1]); rc = ns['main'](sys.argv[2:]);"
              " assert 'torch' not in sys.modules and 'siamkit' not in sys.modules; sys.exit(rc)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def predict(*items: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", driver, str(tmp_path / "onnx" / "predict.py"),
                               *items], capture_output=True, text=True, env=env)

    r = predict(a, b)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["score"] == pytest.approx(want_score, abs=1e-4)
    r = predict(a, '{"nope": 1}')
    assert r.returncode != 0 and "column 'nope' is not one of the model's" in r.stderr


def test_table_config_errors(tmp_path, capsys):
    from siamkit.config import check_config

    rows = [[k, k % 3, c] for c in "wxyz" for k in range(6)]
    table = _write_table(tmp_path / "s.csv", ["a", "b", "kind"], rows)
    args = ["train", "--config", str(ROOT / "configs" / "digits.yaml"), "--out",
            str(tmp_path / "run"), "--no-progress", "--set", "data.dataset=table", "--set",
            f"data.root={table}", "--set", "data.label_column=kind", "--set",
            "data.split_file=null", "--set", "optim.steps=2"]
    assert main(args + ["--set", "data.val_groups=1"]) == 1  # episodes need two classes
    assert "one class held out for validation" in capsys.readouterr().err
    raw = [*args, "--set", "data.val_groups=2", "--set", "data.numeric_scaling=none"]
    assert main(["--quiet", *raw]) == 0
    # values too large for the encoder: a clear error in evaluation and in training
    huge = _write_table(tmp_path / "h.csv", ["a", "b", "kind"],
                        [[f"{k}e30", k % 3, c] for c in "wxyz" for k in range(1, 7)])
    assert main(["eval", "retrieval", "--model", str(tmp_path / "run"), "--data",
                 str(huge)]) == 1
    assert "embed to values too large" in capsys.readouterr().err
    raw[raw.index(f"data.root={table}")] = f"data.root={huge}"
    raw[raw.index(str(tmp_path / "run"))] = str(tmp_path / "run2")
    assert main(raw) == 1
    assert "step 1: embeddings too large" in capsys.readouterr().err
    single = _write_table(tmp_path / "one.csv", ["a", "kind"],
                          [[1, "w"], [2, "w"], [3, "solo"], [4, "x"], [5, "x"], [6, "y"],
                           [7, "y"], [8, "z"], [9, "z"]])
    raw[raw.index(f"data.root={huge}")] = f"data.root={single}"
    split = tmp_path / "one.json"
    split.write_text(json.dumps({"train": ["w", "solo", "x"], "val": ["y", "z"], "test": []}))
    raw[raw.index("data.split_file=null")] = f"data.split_file={split}"
    assert main(raw) == 1  # a class of one row cannot form a positive pair
    err = capsys.readouterr().err
    assert "fewer than 2 items" in err and "'solo' with 1" in err

    with pytest.raises(ConfigError, match="needs data.root"):
        check_config(load_config(ROOT / "configs" / "digits.yaml", ["data.dataset=table"]))
    with pytest.raises(ConfigError, match="tabular"):
        check_config(load_config(ROOT / "configs" / "digits.yaml",
                                 ["data.dataset=table", "data.root=t.csv",
                                  "model.encoder=conv4"]))
    with pytest.raises(ConfigError, match="numeric_scaling must be one of log, standard"):
        check_config(load_config(ROOT / "configs" / "digits.yaml",
                                 ["data.dataset=table", "data.root=t.csv",
                                  "data.numeric_scaling=minmax"]))


def test_split_a_table_by_class(tmp_path, capsys):
    """siamkit split takes a table: its classes (or pattern groups of class names) are the
    groups, so no class straddles train and test; --check refuses it (images only)."""
    rows = [[i, f"{c}{k}"] for i, (c, k) in enumerate((c, k) for c in "abcdefghij"
                                                      for k in "xy")]
    table = _write_table(tmp_path / "t.csv", ["x", "kind"], rows)
    out = tmp_path / "split.json"
    assert main(["split", "--data", str(table), "--label", "kind", "--out", str(out),
                 "--val", "0.2", "--test", "0.3", "--json"]) == 0
    split = json.loads(out.read_text())
    groups = split["train"] + split["val"] + split["test"]
    assert sorted(groups) == sorted(r[1] for r in rows) and len(split["test"]) == 6
    assert split["rows"] == {"train": 10, "val": 4, "test": 6}
    # classes ax and ay share the group a: they land on one side together
    assert main(["split", "--data", str(table), "--label", "kind", "--group-pattern",
                 "^(.)", "--out", str(out), "--val", "0.2", "--test", "0.3"]) == 0
    split = json.loads(out.read_text())
    assert sorted(split["train"] + split["val"] + split["test"]) == list("abcdefghij")
    capsys.readouterr()
    assert main(["split", "--data", str(tmp_path / "nope.csv"), "--out", str(out)]) == 1
    assert "nope.csv: no such folder or table file" in capsys.readouterr().err
    assert main(["split", "--check", "--data", str(table), "--split", str(out)]) == 1
    assert "is a table" in capsys.readouterr().err
    # evaluation keeps the classes of the split's groups (its group_pattern on class names)
    from siamkit.data.records import RecordFeaturizer
    from siamkit.data.splitfiles import SplitFile, split_classes
    from siamkit.data.tabular import read_table, table_dataset

    records, labels = read_table(table, "kind")
    data = table_dataset(records, labels, RecordFeaturizer().fit(records), str(table))
    test = split_classes(data, SplitFile.read(out), "test")
    assert sorted({n[0] for n in test.class_names}) == sorted(split["test"])
    assert len(test.class_names) == 2 * len(split["test"])


def test_prepare_table_fits_on_training_rows_and_featurises_validation_alike(tmp_path):
    """Held-out validation classes (here: whole pattern groups) are featurised by the
    featuriser fitted on the training rows alone."""
    import numpy as np
    import torch

    from siamkit.config import check_config
    from siamkit.data.records import RecordFeaturizer
    from siamkit.data.tabular import read_table
    from siamkit.training import load_training_data, prepare_table

    rng = np.random.default_rng(0)
    rows = [[f"{rng.normal(10 * (g == 'd')):.4f}", rng.choice(["x", "y", "z"]), f"{g}{k}"]
            for g in "abcd" for k in "12" for _ in range(5)]
    table = _write_table(tmp_path / "t.csv", ["size", "shade", "kind"], rows)
    config = load_config(ROOT / "configs" / "digits.yaml",
                         [f"data.root={table}", "data.dataset=table", "data.label_column=kind",
                          "data.group_pattern=^(.)", "data.val_groups=1", "data.split_file=null"])
    td, featurizer = prepare_table(config)
    records, labels = read_table(table, "kind")
    val_kinds = set(td.val_set.class_names)
    assert len(val_kinds) == 2 and len({k[0] for k in val_kinds}) == 1  # one whole group
    train_recs = [r for r, y in zip(records, labels, strict=True) if y not in val_kinds]
    val_recs = [r for r, y in zip(records, labels, strict=True) if y in val_kinds]
    assert featurizer.to_dict() == RecordFeaturizer().fit(train_recs).to_dict()
    assert list(featurizer.numeric) == ["size"] and list(featurizer.categorical) == ["shade"]
    want = torch.from_numpy(featurizer.transform(val_recs))
    assert sorted(map(tuple, td.val_set.images.tolist())) == sorted(map(tuple, want.tolist()))
    assert td.images.shape == (len(train_recs), featurizer.dim)
    with pytest.raises(ConfigError, match="prepare_table"):
        load_training_data(config)
    config.data.numeric_scaling = "none"  # the sizes as they are in the file
    td, featurizer = prepare_table(config)
    assert featurizer.numeric_scaling == "none"
    sizes = sorted(float(r["size"]) for r in train_recs)
    assert sorted(td.images[:, 0].tolist()) == pytest.approx(sizes, abs=1e-6)
    with pytest.raises(ConfigError, match="group_pattern"):
        check_config(load_config(ROOT / "configs" / "digits.yaml",
                                 [f"data.root={table}", "data.dataset=table",
                                  "data.group_depth=1"]))


def test_a_record_model_is_refused_a_table_or_folder():
    from siamkit.data.download import DatasetError
    from siamkit.inputs import InputSpec, adapter_for

    with pytest.raises(DatasetError, match="pair files"):
        adapter_for(InputSpec(kind="records", featurizer={})).load_dataset("items.csv")
