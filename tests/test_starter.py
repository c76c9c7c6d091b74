"""Starting configs chosen from the data: a folder of images, a file of text pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import MIRROR
from siamkit.data.download import DatasetError
from siamkit.starter import folder_config, pairs_config


def _image(path: Path, size: tuple[int, int], mode: str = "L", value: int = 200) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 20, 20)).save(path)


def test_a_real_face_folder_gets_a_config_and_says_why():
    if not (MIRROR / "att_faces").is_dir():
        pytest.skip("AT&T faces mirror absent")
    config, notes = folder_config(MIRROR / "att_faces")
    d = config.data
    assert (d.size, d.channels, d.invert, d.val_groups) == (64, 1, False, 4)
    assert config.optim.k == 5 and config.eval.within_group is False
    assert any("92 x 112" in n for n in notes) and any("grayscale" in n for n in notes)


def test_ink_on_paper_is_inverted_and_mixed_images_are_said(tmp_path):
    for c in range(8):
        _image(tmp_path / "a" / f"c{c}" / "1.png", (40, 40), value=250)
        _image(tmp_path / "a" / f"c{c}" / "2.png", (60, 50), value=240)
    config, notes = folder_config(tmp_path / "a")
    # short sides 40 and 50: the median 45, to a multiple of 4
    assert config.data.invert and config.data.size == 44 and config.data.val_groups == 2
    assert any("2 sizes" in n for n in notes)
    _image(tmp_path / "a" / "c0" / "3.png", (40, 40), mode="RGB")
    config, notes = folder_config(tmp_path / "a")
    assert config.data.channels == 3 and any("mix modes" in n for n in notes)
    # what the user sets replaces the note on that choice, and is said
    config, notes = folder_config(tmp_path / "a", ["data.val_groups=3", "optim.steps=7"])
    assert config.data.val_groups == 3 and config.optim.steps == 7
    assert not any(n.startswith(("validation:", "batches:")) for n in notes)
    assert notes[-1] == "set by you: data.val_groups=3, optim.steps=7"
    assert any(n.startswith("data.size=") for n in notes)


@pytest.mark.parametrize(("layout", "needle"), [
    ({}, "no images found"),
    ({"only": 3}, "one class"),
    ({"a": 1, "b": 1, "c": 1}, "at most one has two images"),
])
def test_folders_that_cannot_train_are_refused_saying_what_to_change(tmp_path, layout,
                                                                     needle):
    (tmp_path / "d" / "empty").mkdir(parents=True)
    for name, n in layout.items():
        for i in range(n):
            _image(tmp_path / "d" / name / f"{i}.png", (30, 30))
    with pytest.raises(DatasetError, match=needle):
        folder_config(tmp_path / "d")


def test_a_pair_file_gets_a_text_config(tmp_path):
    f = tmp_path / "p.csv"
    rows = ["q1,q2,dup"] + [f"text number {i},another text {i},{i % 2}" for i in range(40)]
    f.write_text("\n".join(rows) + "\n")
    config, notes = pairs_config(f, a="q1", b="q2", label="dup")
    assert config.model.encoder == "text" and config.loss.name == "online_contrastive"
    assert config.pairs.a == "q1" and config.model.encoder_args["max_seq_length"] == 32
    assert any("20 same" in n for n in notes)
    with pytest.raises(DatasetError, match=r"no column 'question'; the first row has "
                                           r"\['dup', 'q1', 'q2'\]"):
        pairs_config(f, a="question", b="q2", label="dup")
    g = tmp_path / "g.csv"
    g.write_text("a,b,score\n" + "\n".join(f"x{i},y{i},{i / 10}" for i in range(10)) + "\n")
    with pytest.raises(DatasetError, match="need a validation file"):
        pairs_config(g, score="score")
    # column names YAML would read otherwise: a comment, a boolean, null, a number
    h = tmp_path / "odd name: #1.tsv"
    h.write_text("#1 String\tyes\tnull\n" + "\n".join(f"x{i}\ty{i}\t{i % 2}"
                                                      for i in range(20)) + "\n")
    config, notes = pairs_config(h, a="#1 String", b="yes", label="null",
                                 overrides=["pairs.val_fraction=0.2"])
    assert (config.pairs.a, config.pairs.b, config.pairs.label) == ("#1 String", "yes", "null")
    assert config.pairs.train == str(h) and config.pairs.val_fraction == 0.2
    assert not any(n.startswith("validation:") for n in notes)
    config, _ = pairs_config(g, score="score", val=g)
    assert config.loss.name == "cosent" and config.pairs.val == str(g)
    assert np.isclose(config.loss.scale, 20)
