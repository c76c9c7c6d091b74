"""Tests for siamkit.config: dataclass defaults, YAML loading and key=value overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from siamkit.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
)


def _write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_without_file():
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.data.dataset == "omniglot" and cfg.data.size == 28
    assert cfg.data.rotations == [0]
    assert cfg.model.encoder_args == {}
    assert cfg.augment.scale == [0.8, 1.2]
    assert cfg.optim.time_limit_minutes is None


def test_default_lists_are_not_shared():
    a, b = Config(), Config()
    a.data.rotations.append(1)
    assert b.data.rotations == [0]


def test_yaml_load_sets_given_keys_and_keeps_defaults(tmp_path):
    path = _write(tmp_path, """
seed: 3
data:
  dataset: folder
  root: /some/where
  group_depth: 1
  rotations: [0, 1, 2, 3]
model:
  encoder: resnet
  encoder_args: {width: 32}
optim:
  lr: 3.0e-4
  time_limit_minutes: 5
""")
    cfg = load_config(path)
    assert cfg.seed == 3
    assert cfg.data.dataset == "folder" and cfg.data.root == "/some/where"
    assert cfg.data.group_depth == 1 and cfg.data.rotations == [0, 1, 2, 3]
    assert cfg.model.encoder == "resnet" and cfg.model.encoder_args == {"width": 32}
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.optim.time_limit_minutes == 5.0 and isinstance(cfg.optim.time_limit_minutes, float)
    assert cfg.optim.steps == 2000  # untouched default
    assert cfg.loss == Config().loss


def test_json_and_empty_files(tmp_path):
    assert load_config(_write(tmp_path, '{"seed": 9}', "c.json")).seed == 9
    assert load_config(_write(tmp_path, "", "empty.yaml")) == Config()


def test_round_trip_through_dict():
    cfg = apply_overrides(Config(), ["optim.lr=0.01", "model.encoder_args.depth=4"])
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_overrides_parse_types():
    cfg = load_config(None, ["optim.lr=3e-4", "optim.steps=50", "model.head=true",
                             "data.rotations=[0,2]", "optim.threads=2", "seed=7",
                             "model.distance=cosine", "optim.time_limit_minutes=null"])
    assert cfg.optim.lr == pytest.approx(3e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.optim.steps == 50 and isinstance(cfg.optim.steps, int)
    assert cfg.model.head is True
    assert cfg.data.rotations == [0, 2]
    assert cfg.optim.threads == 2
    assert cfg.seed == 7
    assert cfg.model.distance == "cosine"
    assert cfg.optim.time_limit_minutes is None


def test_overrides_apply_on_top_of_file(tmp_path):
    path = _write(tmp_path, "optim:\n  steps: 100\n  lr: 0.1\n")
    cfg = load_config(path, ["optim.steps=5"])
    assert cfg.optim.steps == 5 and cfg.optim.lr == pytest.approx(0.1)


def test_override_does_not_change_the_input():
    base = Config()
    apply_overrides(base, ["optim.steps=1"])
    assert base.optim.steps == 2000


def test_encoder_args_accept_new_keys():
    cfg = apply_overrides(Config(), ["model.encoder_args.width=64",
                                     "model.encoder_args.norm=batch"])
    assert cfg.model.encoder_args == {"width": 64, "norm": "batch"}


@pytest.mark.parametrize("override, key", [
    ("optim.learning_rate=0.1", "optim.learning_rate"),
    ("bogus=1", "bogus"),
    ("nosection.lr=1", "nosection.lr"),
    ("optim.lr.x=1", "optim.lr.x"),
    ("model.other_args.x=1", "model.other_args.x"),
])
def test_unknown_override_key_is_named(override, key):
    with pytest.raises(ConfigError, match=f"unknown config key '{key}'"):
        apply_overrides(Config(), [override])


def test_unknown_file_key_is_named(tmp_path):
    path = _write(tmp_path, "optim:\n  stpes: 10\n")
    # the message names the full dotted key (its quoting is not part of the contract)
    with pytest.raises(ConfigError, match=r"unknown config key '?optim\.'?stpes'?;"):
        load_config(path)


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="'optim.steps' is not key=value"):
        apply_overrides(Config(), ["optim.steps"])


@pytest.mark.parametrize("override, message", [
    ("optim.steps=abc", r"optim\.steps: expected int, got 'abc'"),
    ("optim.steps=2.5", r"optim\.steps: expected an integer, got 2\.5"),
    ("optim.steps=true", r"optim\.steps: expected a number, got True"),
    ("optim.lr=[1]", r"optim\.lr: expected a number"),
    ("model.head=maybe", r"model\.head: expected true or false, got 'maybe'"),
    ("data.rotations=3", r"data\.rotations: expected a list, got 3"),
    ("model.encoder_args=3", r"model\.encoder_args: expected a mapping"),
    ("data.size=null", r"data\.size: may not be empty"),
    ("model.encoder=[a]", r"model\.encoder: expected text"),
])
def test_bad_types_are_rejected(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Config(), [override])


def test_section_given_a_scalar_in_file(tmp_path):
    with pytest.raises(ConfigError, match=r"optim: expected a mapping, got 3"):
        load_config(_write(tmp_path, "optim: 3\n"))


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(missing)


def test_invalid_yaml_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML/JSON"):
        load_config(_write(tmp_path, "optim: [1, 2\n"))
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_config(_write(tmp_path, "- 1\n- 2\n"))


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs")
                                        .glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path, monkeypatch):
    from siamkit.config import check_config

    monkeypatch.setenv("SIAMKIT_MIRROR", "/nonexistent")  # only names and values are checked
    check_config(load_config(path))


def test_faces_refit_split_keeps_the_test_subjects_out():
    """The refit split (every non-test subject trains) has the same test subjects as the
    split the config was tuned on, and trains on exactly its train + validation subjects."""
    import json

    splits = Path(__file__).resolve().parents[1] / "configs" / "splits"
    tuned = json.loads((splits / "att_faces.json").read_text())
    refit = json.loads((splits / "att_faces_refit.json").read_text())
    assert refit["test"] == tuned["test"] and not refit["val"]
    assert sorted(refit["train"]) == sorted(tuned["train"] + tuned["val"])
    assert not set(refit["train"]) & set(refit["test"])


def test_packaged_configs_load_by_name_and_find_their_split_files(tmp_path, monkeypatch):
    from siamkit.config import config_path, packaged_configs

    assert {"omniglot", "att_faces", "signatures", "stsb"} <= set(packaged_configs())
    monkeypatch.chdir(tmp_path)  # anywhere: the packaged config and its split file are found
    config = load_config("att_faces")
    split = Path(config.data.split_file)
    assert split.is_absolute() and split.is_file() and split.name == "att_faces.json"
    assert config_path("omniglot").name == "omniglot.yaml"
    with pytest.raises(ConfigError, match="config file not found: nope.yaml; packaged "
                                          "configs: abt_buy"):
        load_config("nope.yaml")


def test_the_configuration_reference_in_docs_is_the_generated_one():
    """docs/configuration.md lists every key with its type, default and meaning, as the
    dataclasses say today (regenerate: python -m siamkit.config_reference)."""
    from siamkit.config_reference import reference_markdown, reference_rows

    rows = reference_rows()
    assert all(meaning for _, _, _, meaning in rows), [r[0] for r in rows if not r[3]]
    assert ("optim.lr", "float", "0.001", "peak learning rate (AdamW)") in rows
    docs = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
    assert docs.read_text() == reference_markdown()


def test_group_fill_and_whole_groups_are_refused_together():
    from siamkit.config import check_config

    cfg = apply_overrides(Config(), ["optim.group_fill=true"])
    check_config(cfg)
    cfg.optim.whole_groups = True
    with pytest.raises(ConfigError, match="group_fill and optim.whole_groups"):
        check_config(cfg)
