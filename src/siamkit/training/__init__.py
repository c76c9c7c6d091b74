"""Training: one loop (:class:`Trainer`) with pluggable objectives, ``fit`` from Python, and
``train`` from a config.

    >>> net = fit(MyEncoder(), train_set, val_set, loss="triplet", miner="semihard")
    >>> result = train(load_config("configs/omniglot.yaml"), "runs/omniglot")
"""

from __future__ import annotations

from .config_data import (
    TrainingData,
    load_pair_data,
    load_training_data,
    prepare_data,
    prepare_table,
    val_is_seeded,
)
from .fit import fit
from .items import ClassData, Items, PairData, class_data, infer_input_spec, pair_data
from .objectives import ClassBatches, HardNegativePairs, Objective, PairBatches
from .optim import lr_factor, make_optimiser, set_lr
from .recipes import settings_from_config, train
from .trainer import (
    RESUMABLE_CHANGES,
    Callback,
    Trainer,
    TrainResult,
    TrainSettings,
    Validator,
    seed_everything,
)
from .validation import EpisodeValidator, PairValidator, calibrate_classes, calibrate_pairs

__all__ = [
    "Callback", "ClassBatches", "ClassData", "EpisodeValidator", "HardNegativePairs", "Items",
    "Objective", "PairBatches", "PairData", "PairValidator", "RESUMABLE_CHANGES", "Trainer",
    "TrainResult", "TrainSettings", "TrainingData", "Validator", "calibrate_classes",
    "calibrate_pairs", "class_data", "fit", "infer_input_spec", "load_pair_data",
    "load_training_data", "lr_factor", "make_optimiser", "pair_data", "prepare_data",
    "prepare_table", "seed_everything", "set_lr", "settings_from_config", "train",
    "val_is_seeded",
]
