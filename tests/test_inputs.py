"""Input adapters: command-line arguments embedded as the card says; options that do not
apply to a kind of input are refused."""

from __future__ import annotations

import pytest
import torch

from conftest import make_image_run, make_image_tree
from siamkit.checkpoint import load_model
from siamkit.data.download import DatasetError
from siamkit.inputs import InputSpec, VectorInput, adapter_for


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
