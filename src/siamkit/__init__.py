"""siamkit: Siamese networks for verification and one-shot recognition."""

from __future__ import annotations

from .distances import CosineSimilarity, DotProductSimilarity, EuclideanDistance, create_distance
from .encoders import create_encoder, list_encoders
from .siamese import LearnedHead, SiameseNetwork

__version__ = "0.1.0"

__all__ = [
    "CosineSimilarity",
    "DotProductSimilarity",
    "EuclideanDistance",
    "LearnedHead",
    "SiameseNetwork",
    "create_distance",
    "create_encoder",
    "list_encoders",
    "__version__",
]
