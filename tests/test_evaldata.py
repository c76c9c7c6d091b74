"""Evaluation data: a labelled set kept to a split subset; identification's references,
queries (the enrolled ones left out) and unknowns."""

from __future__ import annotations

import json

import pytest

from conftest import make_image_run, make_image_tree
from siamkit.checkpoint import load_model
from siamkit.data.download import DatasetError
from siamkit.evaldata import identification_sets, load_eval_data


@pytest.fixture(scope="module")
def model_and_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaldata")
    return load_model(make_image_run(root / "run"))[0], make_image_tree(root / "tree",
                                                                       classes=4, per_class=3)


def test_load_eval_data_keeps_the_subsets_classes(model_and_tree, tmp_path):
    model, tree = model_and_tree
    assert load_eval_data(model, str(tree), use_cache=False).num_classes == 4
    split = tmp_path / "s.json"
    split.write_text(json.dumps({"train": ["c0", "c1"], "test": ["c2", "c3"]}))
    test = load_eval_data(model, str(tree), str(split), "test", use_cache=False)
    assert test.class_names == ["c2", "c3"] and len(test) == 6
    assert load_eval_data(model, str(tree), str(split), "train").class_names == ["c0", "c1"]


def test_identification_sets_leave_the_enrolled_items_out_of_the_queries(model_and_tree):
    model, tree = model_and_tree
    sets = identification_sets(model, str(tree), str(tree), shots=1)
    assert len(sets.references) == 4 and len(sets.queries) == 8 and sets.unknown is None
    assert not set(sets.references.paths) & set(sets.queries.paths)
    assert len(identification_sets(model, str(tree), str(tree), str(tree), 1).unknown) == 12
    with pytest.raises(DatasetError, match="no query images left"):
        identification_sets(model, str(tree), str(tree))  # every item enrolled
