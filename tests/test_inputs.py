"""InputSpec: one typed record of how a model reads inputs, round-tripped through the card;
the adapters that read each kind."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_image_run, make_image_tree
from siamkit.checkpoint import load_model
from siamkit.data.download import DatasetError
from siamkit.inputs import ImageInput, InputSpec, RowInput, TextInput, VectorInput, adapter_for


def test_spec_round_trips_through_the_card_form():
    spec = InputSpec(kind="image", size=(16, 32), channels=3, invert=True, keep_aspect=True,
                     mean=[0.5, 0.4, 0.3], std=(0.2, 0.2, 0.2), tta=2)
    d = spec.to_dict()
    assert d == {"kind": "image", "channels": 3, "size": [16, 32], "invert": True,
                 "keep_aspect": True, "tta": 2, "mean": [0.5, 0.4, 0.3],
                 "std": [0.2, 0.2, 0.2]}
    assert InputSpec.from_dict(d) == spec and spec.shape == (3, 16, 32)
    mirrored = InputSpec(kind="image", size=8, mirror=True)
    assert mirrored.to_dict()["mirror"] is True and InputSpec.from_dict(
        mirrored.to_dict()) == mirrored
    assert InputSpec(kind="text").to_dict() == {"kind": "text"}
    table = InputSpec(kind="tabular", features=5, featurizer={"numeric": {}},
                      label_column="y", feature_columns=["a"])
    assert InputSpec.from_dict(table.to_dict()) == table and table.is_table


def test_older_cards_fill_what_they_left_out_from_defaults():
    # a card written before kinds: channels and size only; tta from the training config
    spec = InputSpec.from_dict({"channels": 1, "size": 28, "invert": True}, {"tta": 4,
                                                                           "size": 105})
    assert spec.kind == "image" and spec.size == 28 and spec.tta == 4 and spec.invert
    # image defaults do not leak into other kinds
    assert InputSpec.from_dict({"kind": "text"}, {"size": 28}).size is None


@pytest.mark.parametrize(("values", "needle"), [
    ({"kind": "audio"}, "input kind must be one of"),
    ({"kind": "image"}, "needs its size"),
    ({"size": "big"}, "a side or \\[height, width\\]"),
    ({"size": 8, "channels": 2}, "channels must be 1 or 3"),
    ({"size": 8, "invert": "yes"}, "invert must be true or false"),
    ({"size": 8, "mean": [0.5, 0.5]}, "one number per channel"),
    ({"size": 8, "mean": [0.5], "std": [0.0]}, "std must be positive"),
    ({"size": 8, "tta": -1}, "tta must be a whole number"),
    ({"size": 8, "mirror": 1}, "mirror must be true or false"),
    ({"kind": "records"}, "needs its fitted featurizer"),
    ({"size": 8, "colour": 1}, "unknown input field 'colour'"),
])
def test_bad_specs_name_the_field(values, needle):
    with pytest.raises(ValueError, match=needle):
        InputSpec.from_dict(values)


def test_one_adapter_per_kind():
    assert isinstance(adapter_for(InputSpec(size=8)), ImageInput)
    assert isinstance(adapter_for(InputSpec(kind="text")), TextInput)
    assert isinstance(adapter_for(InputSpec(kind="tabular", features=3)), VectorInput)
    assert isinstance(adapter_for(InputSpec(kind="records", featurizer={})), RowInput)
    with pytest.raises(DatasetError, match="does not say how it reads"):
        adapter_for(None)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_image_adapter_reads_bytes_as_the_spec_says():
    white = np.full((20, 40), 255, dtype=np.uint8)
    x = ImageInput(InputSpec(size=(10, 10), invert=True)).prepare([_png(white)])
    assert x.shape == (1, 1, 10, 10) and x.dtype == torch.uint8 and int(x.max()) == 0
    padded = ImageInput(InputSpec(size=(10, 10), keep_aspect=True)).prepare([_png(white)])
    assert int(padded[0, 0, 0, 0]) == 0 and int(padded[0, 0, 5, 5]) == 255  # letterboxed
    limited = ImageInput(InputSpec(size=8), max_pixels=100)
    with pytest.raises(DatasetError, match="over the limits"):
        limited.prepare([_png(white)], names=["big.png"])
    with pytest.raises(DatasetError, match="junk.png: not a readable image"):
        limited.prepare([b"not an image"], names=["junk.png"])


def _encoded(fmt: str, size: tuple[int, int] = (20, 16), mode: str = "RGBA") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (90, 120, 200, 255)).save(buf, format=fmt)
    return buf.getvalue()


def test_image_adapter_reads_only_its_formats(tmp_path):
    adapter = ImageInput(InputSpec(size=8))
    assert adapter.formats == ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP", "PPM")
    with pytest.raises(DatasetError, match=r"up\.png: format QOI is not accepted "
                                           r"\(accepted: PNG, JPEG"):
        adapter.prepare([_encoded("QOI")], names=["up.png"])
    cut = _encoded("QOI", (64, 64))
    adapter.formats = "png, qoi"
    assert adapter.formats == ("PNG", "QOI")
    assert adapter.prepare([_encoded("QOI")]).shape == (1, 1, 8, 8)
    with pytest.raises(DatasetError, match=r"cut\.qoi: not a readable image"):
        adapter.prepare([cut[: len(cut) // 2]], names=["cut.qoi"])  # was a ValueError
    with pytest.raises(ValueError, match="'AVI' is not one Pillow opens"):
        ImageInput(InputSpec(size=8), formats=("PNG", "AVI"))
    # a folder of images goes through the same formats
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(_encoded("PNG"))
    (tmp_path / "a" / "y.png").write_bytes(_encoded("DDS"))
    with pytest.raises(DatasetError, match=r"y\.png: format DDS is not accepted"):
        ImageInput(InputSpec(size=8)).load_dataset(str(tmp_path), use_cache=False)
    both = ImageInput(InputSpec(size=8), formats=("PNG", "DDS"))
    assert len(both.load_dataset(str(tmp_path), use_cache=False)) == 2


def test_image_adapter_limits_hold_for_folders_too(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "wide.png").write_bytes(_encoded("PNG", (40, 20)))
    with pytest.raises(DatasetError, match=r"wide\.png: 40 x 20 pixels is over the limits "
                                           r"\(100 pixels, 16384 a side\)"):
        ImageInput(InputSpec(size=8), max_pixels=100).load_dataset(str(tmp_path),
                                                                   use_cache=False)
    with pytest.raises(DatasetError, match=r"wide\.png: 40 x 20 pixels is over the limits"):
        ImageInput(InputSpec(size=8), max_side=39).prepare([str(tmp_path / "a" / "wide.png")])
    fine = ImageInput(InputSpec(size=8), max_pixels=800, max_side=40)
    assert len(fine.load_dataset(str(tmp_path), use_cache=False)) == 1


def test_text_and_row_adapters_check_their_items():
    with pytest.raises(DatasetError, match="text 1 is empty"):
        TextInput(InputSpec(kind="text")).prepare(["fine", " "])
    from siamkit.data.records import RecordFeaturizer

    f = RecordFeaturizer().fit([{"price": str(p), "brand": b} for p, b in
                                [(1, "a"), (2, "b"), (3, "a"), (4, "b"), (5, "a")]])
    rows = RowInput(InputSpec(kind="tabular", featurizer=f.to_dict(), label_column="kind"))
    x = rows.prepare([rows.parse('{"price": 2, "brand": "a", "kind": "ignored"}')])
    assert x.shape == (1, f.dim)
    with pytest.raises(DatasetError, match="row 0: .*colour"):
        rows.prepare([{"colour": "red"}])
    with pytest.raises(DatasetError, match="a table model takes rows as JSON objects"):
        rows.parse("price 2")


def test_embed_arguments_parses_then_embeds(tmp_path):
    model = load_model(make_image_run(tmp_path / "run"))[0]
    tree = make_image_tree(tmp_path / "tree", classes=1, per_class=2)
    paths = [str(p) for p in sorted((tree / "c0").iterdir())]
    adapter = adapter_for(model.input_spec)
    torch.testing.assert_close(adapter.embed_arguments(model, paths),
                               adapter.embed_items(model, paths))
    assert adapter.embed_arguments(model, paths).shape == (2, model.embedding_dim)


def test_rows_have_no_folders_or_file_names_to_group_by():
    adapter = VectorInput(InputSpec(kind="tabular", features=64))
    for option in ({"group_depth": 1}, {"drawer_pattern": r"_(\d+)"}):
        with pytest.raises(DatasetError, match="a table's rows have neither"):
            adapter.load_dataset("sklearn:digits", **option)
    with pytest.raises(DatasetError, match="takes sklearn:digits"):
        adapter.load_dataset("t.csv", group_depth=0, drawer_pattern=None)
