"""The command line on a tiny real run: every command, its JSON keys and its bad-input errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MIRROR, mirror_path
from siamkit.cli import main
from siamkit.config import load_config


@pytest.fixture(scope="module")
def alphabets(tmp_path_factory) -> Path:
    """A folder-per-class tree of three real Omniglot alphabets (symlinked, not copied)."""
    mirror_path("omniglot")  # skips what needs it when the mirror lacks Omniglot
    os.environ.setdefault("SIAMKIT_MIRROR", str(MIRROR))
    from siamkit.data import omniglot_folder

    src = omniglot_folder("images_background")
    root = tmp_path_factory.mktemp("alphabets")
    for name in sorted(p.name for p in src.iterdir() if p.is_dir())[:3]:
        (root / name).symlink_to(src / name, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, alphabets) -> Path:
    """A tiny model trained through ``siamkit train``."""
    out = tmp_path_factory.mktemp("cli") / "run"
    cfg = out.parent / "tiny.yaml"
    cfg.write_text(
        "data: {dataset: folder, root: %s, group_depth: 1, invert: true, val_groups: 1}\n"
        "model: {encoder_args: {width: 16}}\n"
        "optim: {steps: 10, p: 8, k: 3, warmup_steps: 2}\n"
        "eval: {every: 10, episodes: 10, way: 5}\n".replace("%s", str(alphabets))
    )
    code = main(["--quiet", "train", "--config", str(cfg), "--out", str(out), "--no-progress"])
    assert code == 0
    return out


def test_train_writes_a_run(run_dir):
    card = json.loads((run_dir / "config.json").read_text())
    assert card["config"]["data"]["dataset"] == "folder"
    assert (run_dir / "model.safetensors").is_file()


def test_eval_omniglot_runs_json(run_dir, capsys):
    assert main(["--quiet", "eval", "omniglot-runs", "--model", str(run_dir), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res) >= {"error", "accuracy", "per_run"}
    assert len(res["per_run"]) == 20
    assert res["error"] == pytest.approx(1 - res["accuracy"])
    assert res["accuracy"] > 0.05  # 20-way chance is 0.05; even 10 steps beat it


def test_eval_episodes_json(run_dir, alphabets, capsys):
    code = main(["--quiet", "eval", "episodes", "--model", str(run_dir), "--data",
                 str(alphabets), "--way", "5", "--shot", "1", "--queries", "2",
                 "--episodes", "30", "--group-depth", "1", "--drawer-pattern", r"_(\d+)\.png$",
                 "--seed", "3", "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res) >= {"accuracy", "ci95", "episodes"}
    assert res["episodes"] == 30 and 0 <= res["accuracy"] <= 1 and res["ci95"] >= 0


def test_eval_episodes_text_output(run_dir, alphabets, capsys):
    code = main(["--quiet", "eval", "episodes", "--model", str(run_dir), "--data",
                 str(alphabets), "--way", "5", "--shot", "2", "--episodes", "5",
                 "--group-depth", "1"])
    assert code == 0
    assert "5-way 2-shot accuracy over 5 episodes" in capsys.readouterr().out


def test_eval_episodes_against_a_baseline_on_the_same_episodes(run_dir, alphabets, capsys):
    argv = ["--quiet", "eval", "episodes", "--model", str(run_dir), "--data", str(alphabets),
            "--way", "5", "--shot", "1", "--episodes", "20", "--group-depth", "1",
            "--seed", "4"]
    assert main(argv + ["--baseline", str(run_dir), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["accuracy"] == res["baseline_accuracy"] and res["difference"] == 0.0
    assert main(argv + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == res["accuracy"]
    assert main(argv + ["--baseline", str(run_dir)]) == 0
    assert "difference +0.00 +- 0.00 points (paired" in capsys.readouterr().out


def test_eval_episodes_says_when_its_classes_were_trained_on(run_dir, alphabets, tmp_path,
                                                            capsys, caplog):
    """The card names the classes trained on and validated on; episodes over trained
    classes are flagged (a warning and a count), episodes over held-out ones are not."""
    data = json.loads((run_dir / "config.json").read_text())["data"]
    trained, held = set(data["train_classes"]), set(data["val_classes"])
    everything = {f"{a.name}/{c.name}" for a in alphabets.iterdir() for c in a.iterdir()}
    assert trained and held and not trained & held and trained | held == everything
    argv = ["--quiet", "eval", "episodes", "--model", str(run_dir), "--way", "5",
            "--shot", "1", "--episodes", "5", "--group-depth", "1", "--json"]
    assert main(argv + ["--data", str(alphabets)]) == 0
    assert json.loads(capsys.readouterr().out)["seen_in_training"] == len(trained)
    assert f"{len(trained)} of the {len(everything)} classes" in caplog.text
    assert "do not measure unseen classes" in caplog.text
    caplog.clear()
    unseen = tmp_path / "held_out"
    unseen.mkdir()
    (alphabet,) = {name.split("/")[0] for name in held}
    (unseen / alphabet).symlink_to(alphabets / alphabet, target_is_directory=True)
    assert main(argv + ["--data", str(unseen), "--baseline", str(run_dir)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["seen_in_training"] == 0 and res["baseline_seen_in_training"] == 0
    assert "unseen" not in caplog.text


@pytest.mark.parametrize("argv,needle", [
    (["train", "--config", "/nonexistent.yaml", "--out", "x"], "config file not found"),
    (["eval", "omniglot-runs", "--model", "/nonexistent"], "model folder not found"),
])
def test_missing_files_give_one_line(argv, needle, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert needle in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_bad_config_key_and_unknown_loss(tmp_path, alphabets, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("optim: {stepz: 3}\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 1
    assert "unknown config key 'optim.stepz'" in capsys.readouterr().err
    cfg.write_text(f"data: {{dataset: folder, root: {alphabets}, group_depth: 1}}\n")
    assert main(["--quiet", "train", "--config", str(cfg), "--out", str(tmp_path / "o"),
                 "--set", "loss.name=hinge", "--no-progress"]) == 1
    assert "unknown loss.name 'hinge'" in capsys.readouterr().err


def test_eval_episodes_bad_inputs(run_dir, tmp_path, alphabets, capsys):
    # more ways than classes in any group
    assert main(["--quiet", "eval", "episodes", "--model", str(run_dir), "--data",
                 str(alphabets), "--way", "500", "--shot", "1", "--group-depth", "1"]) == 1
    assert "500-way" in capsys.readouterr().err
    # not a model folder
    (tmp_path / "empty").mkdir()
    assert main(["eval", "episodes", "--model", str(tmp_path / "empty"), "--data",
                 str(alphabets), "--way", "5", "--shot", "1"]) == 1
    assert "not a siamkit run folder" in capsys.readouterr().err
    # a data folder without images
    assert main(["eval", "episodes", "--model", str(run_dir), "--data",
                 str(tmp_path / "empty"), "--way", "5", "--shot", "1"]) == 1
    assert "no images found" in capsys.readouterr().err


def test_debug_shows_traceback(tmp_path):
    with pytest.raises(Exception, match="config file not found"):
        main(["--debug", "train", "--config", str(tmp_path / "none.yaml"), "--out", "x"])


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "siamkit.cli", "--help"], capture_output=True,
                         text=True, check=True)
    for command in ("train", "eval", "demo"):
        assert command in out.stdout


def test_demo_on_a_tiny_budget(tmp_path, capsys):
    """`siamkit demo` end to end (real background set, real runs), shrunk to a few steps."""
    out = tmp_path / "demo"
    code = main(["--quiet", "demo", "--out", str(out), "--no-progress",
                 "--set", "optim.steps=3", "--set", "eval.every=3", "--set", "eval.episodes=5",
                 "--set", "eval.tta=1", "--set", "model.encoder_args.width=8",
                 "--set", "data.rotations=[0]"])
    assert code == 0
    assert "Lake's 20 runs" in capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert set(res) >= {"error", "accuracy", "per_run", "train_minutes", "images_per_second"}
    assert len(res["per_run"]) == 20


def test_demo_rejects_bad_override(capsys):
    assert main(["demo", "--set", "optim.nope=1"]) == 1
    assert "unknown config key 'optim.nope'" in capsys.readouterr().err


# ---------------------------------------------------------------- verification commands


def one_alphabet(alphabets: Path) -> Path:
    return sorted(p for p in alphabets.iterdir())[0]


def test_training_stores_a_threshold_calibrated_on_validation(run_dir):
    card = json.loads((run_dir / "config.json").read_text())
    th = card["threshold"]
    assert th["target"] == "eer" and th["source"] == "validation groups, all pairs"
    assert th["higher_is_closer"] is False and th["validation_"]["pairs"] > 0


def test_calibrate_verify_and_eval_verification(run_dir, alphabets, tmp_path, capsys):
    data = one_alphabet(alphabets)
    assert main(["--quiet", "calibrate", "--model", str(run_dir), "--data", str(data),
                 "--all-pairs", "--target", "far=0.05", "--json"]) == 0
    cal = json.loads(capsys.readouterr().out)
    assert cal["target"] == "far=0.05" and cal["validation"]["far"] <= 0.05
    card = json.loads((run_dir / "config.json").read_text())
    assert card["threshold"]["threshold_"] == cal["threshold"]

    a, b = sorted((data / "character01").iterdir())[:2]
    assert main(["--quiet", "verify", "--model", str(run_dir), str(a), str(b), "--json"]) == 0
    v = json.loads(capsys.readouterr().out)
    assert set(v) == {"score", "same", "threshold"} and v["threshold"] == cal["threshold"]
    assert v["same"] == (v["score"] <= v["threshold"])  # Euclidean: lower is closer

    # a pair list with a header, where 0 means "same" (as in SigComp's Kaggle list)
    c1 = sorted((data / "character01").iterdir())
    c2 = sorted((data / "character02").iterdir())
    rows = ["img1,img2,label"]
    rows += [f"character01/{c1[i].name},character01/{c1[i + 1].name},0" for i in range(5)]
    rows += [f"character01/{c1[i].name},character02/{c2[i].name},1" for i in range(5)]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    assert main(["--quiet", "eval", "verification", "--model", str(run_dir), "--data", str(data),
                 "--pairs", str(tmp_path / "pairs.csv"), "--positive-label", "0",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert {"auc", "eer", "tar_at_far", "accuracy", "f1", "threshold"} <= set(res)
    assert res["positives"] == 5 and res["negatives"] == 5
    assert res["threshold"] == cal["threshold"]  # evaluation never moves it
    assert "test_optimal" in res


def test_verification_bad_inputs(run_dir, alphabets, tmp_path, capsys):
    data = one_alphabet(alphabets)
    (tmp_path / "bad.csv").write_text("character01/nope.png,character01/x.png,1\n")
    assert main(["eval", "verification", "--model", str(run_dir), "--data", str(data),
                 "--pairs", str(tmp_path / "bad.csv")]) == 1
    assert "not found under" in capsys.readouterr().err
    (tmp_path / "junk.png").write_bytes(b"not an image")
    assert main(["verify", "--model", str(run_dir), str(tmp_path / "junk.png"),
                 str(tmp_path / "junk.png")]) == 1
    assert "not a readable image" in capsys.readouterr().err
    assert main(["calibrate", "--model", str(run_dir), "--data", str(data), "--all-pairs",
                 "--target", "far=7"]) == 1
    assert "must be in [0, 1]" in capsys.readouterr().err


def test_report_command_writes_html_matching_eval_json(run_dir, alphabets, tmp_path, capsys):
    data = one_alphabet(alphabets)
    out = tmp_path / "report.html"
    assert main(["--quiet", "report", "--model", str(run_dir), "--data", str(data),
                 "--all-pairs", "--out", str(out), "--json"]) == 0
    reported = json.loads(capsys.readouterr().out)
    assert main(["--quiet", "eval", "verification", "--model", str(run_dir), "--data",
                 str(data), "--all-pairs", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    for key in ("auc", "eer", "accuracy", "f1", "threshold"):
        assert reported[key] == pytest.approx(evaluated[key])
    text = out.read_text()
    for section in ("metrics", "roc", "det", "histogram", "errors", "embedding-map"):
        assert f'<section id="{section}">' in text
    assert f"{evaluated['auc']:.4f}" in text


def test_eval_verification_restricted_to_a_split_subset(run_dir, alphabets, tmp_path, capsys):
    data = one_alphabet(alphabets)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["character03"], "val": [],
                                 "test": ["character01", "character02"]}))
    assert main(["--quiet", "eval", "verification", "--model", str(run_dir), "--data",
                 str(data), "--all-pairs", "--split", str(split), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    # 2 characters x 20 drawings: C(40, 2) = 780 pairs, 2 x C(20, 2) = 380 of them same
    assert res["positives"] == 380 and res["negatives"] == 400
    split.write_text(json.dumps({"test": ["nope"]}))
    assert main(["eval", "verification", "--model", str(run_dir), "--data", str(data),
                 "--all-pairs", "--split", str(split)]) == 1
    assert "no pair has both images in the test groups" in capsys.readouterr().err


def test_report_restricted_to_a_split_maps_only_its_images(run_dir, alphabets, tmp_path,
                                                           capsys):
    data = one_alphabet(alphabets)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"test": ["character01", "character02"]}))
    out = tmp_path / "r.html"
    assert main(["--quiet", "report", "--model", str(run_dir), "--data", str(data),
                 "--all-pairs", "--split", str(split), "--out", str(out)]) == 0
    assert "Embedding map: 40 test images of 2 classes" in out.read_text()


def test_calibrate_refuses_the_test_subset(run_dir, alphabets, tmp_path, capsys):
    data = one_alphabet(alphabets)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"val": ["character03", "character04"],
                                 "test": ["character01", "character02"]}))
    assert main(["calibrate", "--model", str(run_dir), "--data", str(data), "--all-pairs",
                 "--split", str(split), "--subset", "test"]) == 1
    assert "refusing to calibrate on the test subset" in capsys.readouterr().err
    assert main(["--quiet", "calibrate", "--model", str(run_dir), "--data", str(data),
                 "--all-pairs", "--split", str(split)]) == 0  # default: val groups
    card = json.loads((run_dir / "config.json").read_text())
    assert card["threshold"]["source"].endswith(f"val groups of {split}")


def test_calibrate_on_a_scores_file(run_dir, tmp_path, capsys):
    """Validation scores computed elsewhere (group_cv.py's out-of-fold scores for a model
    refitted on every non-test group): the threshold is fitted on them in the model's
    direction (Euclidean: lower is closer) and stored with its source."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    scores = tmp_path / "oof.csv"
    scores.write_text("\ufefffold,score,label\n0,0.1,1\n0,0.3,1\n1,0.2,1\n0,0.8,0\n1,0.9,0\n"
                      "1,1.4,0\n")  # with a byte-order mark, as spreadsheets save CSV
    assert main(["--quiet", "calibrate", "--model", str(run), "--scores", str(scores),
                 "--target", "accuracy", "--json"]) == 0
    cal = json.loads(capsys.readouterr().out)
    assert 0.3 <= cal["threshold"] < 0.8  # every same pair at or under it, no different one
    assert cal["validation"]["accuracy"] == 1.0 and cal["validation"]["pairs"] == 6
    card = json.loads((run / "config.json").read_text())
    assert card["threshold"]["source"] == f"scores in {scores}"
    assert card["threshold"]["threshold_"] == cal["threshold"]

    bad = tmp_path / "bad.csv"
    for text, needle in (
        ("score,label\n0.9,1\n0.8,1\n0.1,0\n0.2,0\n", "lower is closer): similarities"),
        ("score,label\n0.1,1\n0.2,1\n", "calibrating needs different pairs too"),
        ("score,label\n0.1,1\n0.2,\n0.9,0\n", "pair 2: empty label"),
        ("score,label\n0.1,1\n0.2,1.0\n0.9,0\n", "has 3 values"),
        ("a,b\n1,2\n", "columns score and label"),
        ("score,label\nx,1\n0.2,0\n", "pair 1: score 'x' is not a number"),
        ("score,label\nnan,1\n0.2,0\n", "finite"),
    ):
        bad.write_text(text)
        assert main(["calibrate", "--model", str(run), "--scores", str(bad)]) == 1
        assert needle in capsys.readouterr().err, text
    assert json.loads((run / "config.json").read_text())["threshold"] == card["threshold"]
    assert main(["calibrate", "--model", str(run), "--scores", str(tmp_path / "no.csv")]) == 1
    assert "scores file not found" in capsys.readouterr().err
    assert main(["calibrate", "--model", str(run), "--scores", str(scores), "--split",
                 "s.json", "--tta", "2"]) == 1
    assert "--split, --tta would be ignored" in capsys.readouterr().err


def test_eval_verification_without_threshold_gives_nulls(run_dir, alphabets, tmp_path, capsys):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(run_dir, bare)
    card = json.loads((bare / "config.json").read_text())
    card.pop("threshold")
    (bare / "config.json").write_text(json.dumps(card))
    assert main(["--quiet", "eval", "verification", "--model", str(bare), "--data",
                 str(one_alphabet(alphabets)), "--all-pairs", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["threshold"] is None and res["accuracy"] is None and res["auc"] > 0
    assert {"accuracy", "f1", "far", "frr", "threshold"} <= set(res["test_optimal"])


SIGNATURES = MIRROR / "sigcomp2011_dutch" / "images"


@pytest.mark.skipif(not SIGNATURES.is_dir(), reason="SigComp mirror not present")
def test_skilled_pairs_on_real_signatures_of_split_writers(run_dir, tmp_path, capsys):
    split = Path(__file__).resolve().parents[1] / "configs" / "splits" / "sigcomp2011_dutch.json"
    assert main(["--quiet", "eval", "verification", "--model", str(run_dir), "--data",
                 str(SIGNATURES), "--skilled-pairs", "--split", str(split), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    test_writers = json.loads(split.read_text())["test"]
    genuine = {w: len(list((SIGNATURES / w).iterdir())) for w in test_writers}
    forged = {w: len(list((SIGNATURES / f"{w}_forg").iterdir())) for w in test_writers}
    assert res["positives"] == sum(n * (n - 1) // 2 for n in genuine.values())
    assert res["negatives"] == sum(genuine[w] * forged[w] for w in test_writers)


@pytest.mark.skipif(not SIGNATURES.is_dir(), reason="SigComp mirror not present")
def test_signatures_config_trains_and_calibrates_on_skilled_pairs(tmp_path, monkeypatch):
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # the config names its split file relative to the repository
    monkeypatch.setenv("SIAMKIT_MIRROR", str(MIRROR))
    out = tmp_path / "sig"
    assert main(["--quiet", "train", "--config", "configs/signatures.yaml", "--out", str(out),
                 "--no-progress", "--set", "optim.steps=2", "--set", "eval.every=2",
                 "--set", "eval.episodes=5", "--set", "model.encoder_args.width=8",
                 "--set", "data.size=16", "--set", "data.width=32"]) == 0
    card = json.loads((out / "config.json").read_text())
    assert card["threshold"]["source"] == "validation groups, skilled pairs"
    assert card["input"]["size"] == [16, 32] and card["input"]["keep_aspect"] is True
    val_writers = json.loads((root / "configs/splits/sigcomp2011_dutch.json").read_text())["val"]
    n_gen = {w: len(list((SIGNATURES / w).iterdir())) for w in val_writers}
    n_forg = {w: len(list((SIGNATURES / f"{w}_forg").iterdir())) for w in val_writers}
    assert card["threshold"]["validation_"]["positives"] == sum(
        n * (n - 1) // 2 for n in n_gen.values())
    assert card["threshold"]["validation_"]["pairs"] == sum(
        n * (n - 1) // 2 + n * n_forg[w] for w, n in n_gen.items())


def test_eval_verification_ci_and_eval_retrieval(run_dir, alphabets, tmp_path, capsys):
    data = one_alphabet(alphabets)
    assert main(["--quiet", "eval", "verification", "--model", str(run_dir), "--data",
                 str(data), "--all-pairs", "--ci", "50", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    lo, hi = res["ci95"]["eer"]
    assert lo <= res["eer"] <= hi and res["ci_resamples"] == 50
    assert main(["--quiet", "eval", "verification", "--model", str(run_dir), "--data",
                 str(data), "--all-pairs", "--ci", "50"]) == 0
    assert "95% CI" in capsys.readouterr().out

    assert main(["--quiet", "eval", "retrieval", "--model", str(run_dir), "--data", str(data),
                 "--k", "1", "5", "--json"]) == 0
    ret = json.loads(capsys.readouterr().out)
    assert {"recall@1", "recall@5", "map@r", "mrr", "queries", "classes"} <= set(ret)
    assert 0 <= ret["map@r"] <= ret["recall@1"] <= ret["recall@5"] <= 1
    n_classes = len([p for p in data.iterdir() if p.is_dir()])
    assert ret["classes"] == n_classes
    # restricted to the test classes of a split file
    names = sorted(p.name for p in data.iterdir() if p.is_dir())
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": names[2:], "val": [], "test": names[:2]}))
    assert main(["--quiet", "eval", "retrieval", "--model", str(run_dir), "--data", str(data),
                 "--split", str(split), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["classes"] == 2


def test_enroll_identify_and_eval_identification_one_shot(run_dir, alphabets, tmp_path,
                                                         capsys):
    data = one_alphabet(alphabets)
    gallery = tmp_path / "gallery"
    classes = sorted(p for p in data.iterdir() if p.is_dir())
    # one reference per class from a folder, and one class by explicit files
    assert main(["--quiet", "enroll", "--model", str(run_dir), "--gallery", str(gallery),
                 "--from-folder", str(data), "--shots", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["added"] == len(classes) == res["classes"]
    extra = sorted(classes[0].iterdir())[1:3]
    assert main(["--quiet", "enroll", "--model", str(run_dir), "--gallery", str(gallery),
                 "--label", "extra", *map(str, extra), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["classes"] == len(classes) + 1

    query = sorted(classes[3].iterdir())[0]  # an enrolled image: its own class at distance 0
    assert main(["--quiet", "identify", "--model", str(run_dir), "--gallery", str(gallery),
                 str(query), "--k", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (r,) = out["results"]
    # its own class, at distance ~0 (batched and single-image convolutions round apart)
    assert r["matches"][0]["label"] == classes[3].name
    assert r["matches"][0]["score"] == pytest.approx(0.0, abs=1e-4)
    assert len(r["matches"]) == 3 and r["decision"] == classes[3].name
    # a threshold nothing passes: open-set rejection
    assert main(["--quiet", "identify", "--model", str(run_dir), "--gallery", str(gallery),
                 str(sorted(classes[3].iterdir())[1]), "--threshold", "-1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["decision"] == "unknown"
    # the same ranking through FAISS HNSW with its options
    assert main(["--quiet", "identify", "--model", str(run_dir), "--gallery", str(gallery),
                 str(query), "--k", "3", "--backend", "faiss", "--index-args",
                 '{"kind": "hnsw", "m": 16, "ef_search": 64}', "--json"]) == 0
    hnsw = json.loads(capsys.readouterr().out)["results"][0]
    assert [m["label"] for m in hnsw["matches"]] == [m["label"] for m in r["matches"]]
    assert main(["--quiet", "identify", "--model", str(run_dir), "--gallery", str(gallery),
                 str(query), "--index-args", '{"bogus": 1}']) == 1
    assert "bad options" in capsys.readouterr().err

    # one-shot identification of the other drawings; another alphabet as the unknowns
    other = sorted(p for p in alphabets.iterdir())[1]
    assert main(["--quiet", "eval", "identification", "--model", str(run_dir),
                 "--gallery-from", str(data), "--queries", str(data), "--shots", "1",
                 "--unknown", str(other), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["classes"] == len(classes) and ev["references"] == len(classes)
    assert ev["known_queries"] == 19 * len(classes)  # 20 drawers, one enrolled
    assert 3 / len(classes) < ev["rank1"] <= 1  # well above chance even for a tiny model
    assert set(ev["dir_at_far"]) == {"0.01", "0.1"}
    assert ev["dir_at_far"]["0.01"] <= ev["dir_at_far"]["0.1"] <= ev["rank1"]


def test_gallery_commands_refuse_bad_use(run_dir, alphabets, tmp_path, capsys):
    data = one_alphabet(alphabets)
    img = str(sorted(sorted(data.iterdir())[0].iterdir())[0])
    g = str(tmp_path / "g")
    assert main(["identify", "--model", str(run_dir), "--gallery", g, img]) == 1
    assert "enroll classes first" in capsys.readouterr().err
    assert main(["enroll", "--model", str(run_dir), "--gallery", g, img]) == 1
    assert "--label" in capsys.readouterr().err
    assert main(["enroll", "--model", str(run_dir), "--gallery", g, "--label", "unknown",
                 img]) == 1
    assert "reserved" in capsys.readouterr().err
    (tmp_path / "junk.png").write_bytes(b"not an image")
    assert main(["enroll", "--model", str(run_dir), "--gallery", g, "--label", "x",
                 str(tmp_path / "junk.png")]) == 1
    assert "junk.png" in capsys.readouterr().err
    # a gallery made with another model is refused
    from siamkit.gallery import Gallery

    Gallery.create(tmp_path / "other", 64, metric="euclidean", model_id="0" * 64)
    assert main(["identify", "--model", str(run_dir), "--gallery", str(tmp_path / "other"),
                 img]) == 1
    assert "another model" in capsys.readouterr().err


# ---------------------------------------------------------------- the CLI package's additions


def test_remove_a_class_and_enroll_skips_what_the_gallery_holds(run_dir, alphabets, tmp_path,
                                                                capsys):
    data = one_alphabet(alphabets)
    classes = sorted(p.name for p in data.iterdir() if p.is_dir())
    gallery = str(tmp_path / "g")
    enroll = ["--quiet", "enroll", "--model", str(run_dir), "--gallery", gallery,
              "--from-folder", str(data), "--shots", "2", "--json"]
    assert main(enroll) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["added"] == 2 * len(classes) and first["skipped"] == 0
    assert main(enroll) == 0  # the same references again: nothing added
    again = json.loads(capsys.readouterr().out)
    assert again["added"] == 0 and again["skipped"] == 2 * len(classes)
    assert again["references"] == first["references"]
    assert main(enroll[:-1]) == 0
    assert f"enrolled 0 references ({2 * len(classes)} already there skipped)" in (
        capsys.readouterr().out)
    assert main([*enroll, "--allow-duplicates"]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == 2 * len(classes)

    assert main(["--quiet", "remove", "--model", str(run_dir), "--gallery", gallery,
                 "--label", classes[0], "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["removed"] == 4 and res["classes"] == len(classes) - 1
    assert main(["remove", "--model", str(run_dir), "--gallery", gallery, "--label",
                 classes[0]]) == 1
    err = capsys.readouterr().err.strip()
    assert f"no class '{classes[0]}'" in err and len(err.splitlines()) == 1
    assert main(["remove", "--model", str(run_dir), "--gallery", str(tmp_path / "none"),
                 "--label", "x"]) == 1
    assert "no gallery in" in capsys.readouterr().err


def test_version_and_defaults_in_help(capsys):
    import siamkit

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == (
        f"siamkit {siamkit.__version__}")
    with pytest.raises(SystemExit):
        main(["eval", "episodes", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 600)" in text and "(default: test)" in text
    assert "which episodes are drawn (default: 0)" in text  # a default of 0 is shown
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 8000)" in text and "(default: 127.0.0.1)" in text


@pytest.mark.parametrize("argv,needle", [
    (["serve", "--model", "m", "--gallery", "g", "--port", "-1"], "a port is 0"),
    (["serve", "--model", "m", "--gallery", "g", "--port", "70000"], "a port is 0"),
    (["serve", "--model", "m", "--gallery", "g", "--max-body-mb", "0"], "above 0"),
    (["serve", "--model", "m", "--gallery", "g", "--max-body-mb", "nan"], "finite"),
    (["identify", "--model", "m", "--gallery", "g", "x.png", "--threshold", "nan"], "finite"),
])
def test_values_argparse_refuses(argv, needle, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and needle in err.splitlines()[-1]


def test_only_siamkits_own_errors_are_user_errors(monkeypatch, tmp_path, capsys):
    """A bare ValueError or TypeError from inside is a bug: said so, with how to see it."""
    import siamkit.checkpoint

    def broken(run_dir):
        raise ValueError("an internal slip")

    monkeypatch.setattr(siamkit.checkpoint, "load_model", broken)
    assert main(["eval", "omniglot-runs", "--model", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("siamkit: unexpected error (ValueError): an internal slip")
    assert "--debug" in err and len(err.splitlines()) == 1
    with pytest.raises(ValueError, match="internal slip"):
        main(["--debug", "eval", "omniglot-runs", "--model", str(tmp_path)])


def test_progress_bars_only_on_a_terminal(run_dir, alphabets, monkeypatch, capsys):
    args = ["eval", "retrieval", "--model", str(run_dir), "--data",
            str(one_alphabet(alphabets)), "--json"]
    assert main(args) == 0
    assert "embedding" not in capsys.readouterr().err  # stderr is not a terminal here
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(args) == 0
    assert "embedding" in capsys.readouterr().err
    for off in (["--quiet", *args], [*args, "--no-progress"]):
        assert main(off) == 0
        assert "embedding" not in capsys.readouterr().err


def test_train_on_your_own_folder_without_yaml(tmp_path, capsys):
    """train --data chooses a config from the images, says what it chose, and writes the
    resolved config into the run; folders that cannot train are refused with what to do,
    leaving no run folder."""
    from conftest import make_image_tree

    tree = make_image_tree(tmp_path / "photos", classes=6, per_class=4, size=28)
    out = tmp_path / "run"
    assert main(["--quiet", "train", "--data", str(tree), "--out", str(out),
                 "--set", "optim.steps=4", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "chosen from the data:" in printed and "data.size=28" in printed
    assert "trained 4 steps" in printed
    again = load_config(str(out / "train_config.yaml"))
    assert again.data.root == str(tree) and again.optim.steps == 4
    one = make_image_tree(tmp_path / "one", classes=1, per_class=3)
    assert main(["train", "--data", str(one), "--out", str(tmp_path / "bad")]) == 1
    assert "one class" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert main(["config", "init", "--data", str(tree), "--out", str(tmp_path / "c.yaml")]) == 0
    assert load_config(str(tmp_path / "c.yaml")).data.size == 28
    capsys.readouterr()
    assert main(["config", "show", "--config", "omniglot", "--set", "optim.lr=0.5"]) == 0
    assert "lr: 0.5" in capsys.readouterr().out


def test_train_pairs_names_the_columns_it_found(tmp_path, capsys):
    f = tmp_path / "p.csv"
    f.write_text("q1,q2,dup\n" + "".join(f"text {i},other {i},{i % 2}\n" for i in range(20)))
    assert main(["train", "--pairs", str(f), "--a", "question", "--b", "q2", "--label",
                 "dup", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "no column 'question'" in err and "['dup', 'q1', 'q2']" in err
    assert not (tmp_path / "run").exists()
    assert main(["config", "init", "--pairs", str(f), "--a", "q1", "--b", "q2", "--label",
                 "dup"]) == 0
    assert "encoder: text" in capsys.readouterr().out


def test_serve_flags_reach_the_service_settings(monkeypatch, capsys):
    import siamkit.serve as serve

    seen = {}
    monkeypatch.setattr(serve, "run", lambda *args: seen.update(settings=args[-1]))
    assert main(["serve", "--model", "m", "--gallery", "g", "--image-formats", "png,jpg",
                 "--engine", "onnx", "--precision", "fp32", "--max-pixels", "1000"]) == 0
    s = seen["settings"]
    assert s.image_formats == ("PNG", "JPEG") and s.engine == "onnx"
    assert s.precision == "fp32" and s.max_pixels == 1000
    assert main(["serve", "--model", "m", "--gallery", "g", "--image-formats", "png,qoix"]) == 1
    assert "qoix" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--model", "m", "--gallery", "g", "--max-pixels", "0"])


def test_other_libraries_start_up_chatter_is_kept_off_stderr_unless_debugging():
    import logging

    from siamkit.cli import _setup_logging

    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.INFO)  # as the CLI's own set-up leaves it without --quiet
    try:
        siamkit_level = logging.getLogger("siamkit").level
        _setup_logging(debug=False, quiet=False)
        assert not logging.getLogger("faiss.loader").isEnabledFor(logging.INFO)
        assert logging.getLogger("siamkit").level == siamkit_level  # its own logs untouched
    finally:
        root.setLevel(before)
        logging.getLogger("faiss.loader").setLevel(logging.NOTSET)
