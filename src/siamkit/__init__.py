"""siamkit: Siamese networks for verification and one-shot recognition.

Train a twin on your own encoder and data, save it, load it anywhere::

    import siamkit

    net = siamkit.fit(my_encoder, train_set, val_set, loss="triplet", miner="semihard")
    net.save("runs/mine")
    net = siamkit.load("runs/mine")

The pieces also plug into your own training loop: losses take embeddings
(``loss(embeddings, labels, indices)``), miners return typed index tuples, distances know
which way is closer, metrics are plain functions (``siamkit.metrics``).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import metrics
from .calibrate import ThresholdCalibrator
from .checkpoint import load
from .distances import (
    CosineSimilarity,
    Distance,
    DotProductSimilarity,
    EuclideanDistance,
    create_distance,
)
from .encoders import (
    Conv4Encoder,
    EnsembleEncoder,
    KochEncoder,
    MLPEncoder,
    TextEncoder,
    create_encoder,
    list_encoders,
    register_encoder,
)
from .gallery import Gallery, GalleryError, StoreUnavailable
from .inference import Embedder
from .inputs import InputSpec
from .losses import (
    ContrastiveLoss,
    CoSENTLoss,
    CosineSimilarityLoss,
    HeadBCELoss,
    MultipleNegativesRankingLoss,
    NormalizedSoftmaxLoss,
    OnlineContrastiveLoss,
    PrototypicalLoss,
    TripletLoss,
)
from .miners import (
    AllPairsMiner,
    AllTripletsMiner,
    BatchHardMiner,
    HardnessSchedule,
    Miner,
    Pairs,
    ScoredPairs,
    SemiHardMiner,
    Triplets,
    row_pairs,
)
from .samplers import BalancedPairSampler, EpisodeSampler, PairDrawer, PKSampler
from .siamese import LearnedHead, SiameseNetwork
from .training import (
    ClassBatches,
    Objective,
    PairBatches,
    Trainer,
    TrainResult,
    TrainSettings,
    fit,
    train,
)

try:
    __version__ = version("siamkit")  # pyproject.toml holds the one version number
except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    # training
    "fit", "train", "Trainer", "TrainSettings", "TrainResult", "Objective", "ClassBatches",
    "PairBatches",
    # models and saving
    "SiameseNetwork", "LearnedHead", "load", "InputSpec", "create_encoder", "register_encoder",
    "list_encoders", "Conv4Encoder", "KochEncoder", "MLPEncoder", "TextEncoder",
    "EnsembleEncoder",
    # distances
    "Distance", "EuclideanDistance", "CosineSimilarity", "DotProductSimilarity",
    "create_distance",
    # losses
    "ContrastiveLoss", "TripletLoss", "PrototypicalLoss", "NormalizedSoftmaxLoss", "HeadBCELoss",
    "OnlineContrastiveLoss", "MultipleNegativesRankingLoss", "CoSENTLoss",
    "CosineSimilarityLoss",
    # miners and index tuples
    "Miner", "AllPairsMiner", "AllTripletsMiner", "BatchHardMiner", "SemiHardMiner",
    "HardnessSchedule", "Pairs", "Triplets", "ScoredPairs", "row_pairs",
    # samplers
    "PKSampler", "BalancedPairSampler", "EpisodeSampler", "PairDrawer",
    # using a model
    "Embedder", "Gallery", "GalleryError", "StoreUnavailable", "ThresholdCalibrator",
    "metrics",
    "__version__",
]
