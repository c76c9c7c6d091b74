"""Augmentations in pure torch, applied to whole batches (no torchvision)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["RandomAffine", "RandomBrightnessContrast", "Chain", "rotate_as_new_classes"]


class RandomAffine:
    """Koch et al.'s affine distortions, sampled independently for every image of a batch.

    Rotation (degrees), shear, scale and translation (pixels) are drawn uniformly from
    the given ranges; each component is applied with probability ``p`` (Koch: 0.5).
    Empty space is filled with zeros, so images should have a zero background
    (``siamkit.data`` inverts Omniglot so ink is bright and paper is 0).

    Args:
        rotation: maximum absolute rotation in degrees (Koch: 10).
        shear: maximum absolute shear factor (Koch: 0.3).
        scale: (min, max) zoom (Koch: 0.8, 1.2).
        translate: maximum absolute shift in pixels at the image's own size (Koch: 2 at 105 px).
        p: probability of applying each component.
        generator: torch random generator, for reproducibility.
        hflip: probability of mirroring left-right (faces, not characters).

    Shape: (B, C, H, W) float -> (B, C, H, W).
    """

    def __init__(
        self,
        rotation: float = 10.0,
        shear: float = 0.3,
        scale: tuple[float, float] = (0.8, 1.2),
        translate: float = 2.0,
        p: float = 0.5,
        generator: torch.Generator | None = None,
        hflip: float = 0.0,
    ) -> None:
        self.rotation, self.shear, self.scale = rotation, shear, tuple(scale)
        self.translate, self.p, self.hflip = translate, p, hflip
        self.generator = generator

    def _uniform(self, n: int, lo: float, hi: float, identity: float = 0.0) -> torch.Tensor:
        u = torch.rand(n, generator=self.generator)
        on = torch.rand(n, generator=self.generator) < self.p
        return torch.where(on, lo + (hi - lo) * u, torch.full((n,), identity))

    def matrices(self, n: int, height: int, width: int) -> torch.Tensor:
        """Sample (n, 2, 3) affine matrices in the normalised coordinates of affine_grid."""
        theta = self._uniform(n, -self.rotation, self.rotation) * math.pi / 180
        shx = self._uniform(n, -self.shear, self.shear)
        shy = self._uniform(n, -self.shear, self.shear)
        sx = self._uniform(n, *self.scale, identity=1.0)
        sy = self._uniform(n, *self.scale, identity=1.0)
        if self.hflip > 0:  # a mirror image is a negative horizontal scale
            flip = torch.rand(n, generator=self.generator) < self.hflip
            sx = torch.where(flip, -sx, sx)
        tx = self._uniform(n, -self.translate, self.translate) * 2 / width
        ty = self._uniform(n, -self.translate, self.translate) * 2 / height
        cos, sin = torch.cos(theta), torch.sin(theta)
        rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        shear = torch.stack([torch.stack([torch.ones(n), shx], -1),
                             torch.stack([shy, torch.ones(n)], -1)], -2)
        zoom = torch.diag_embed(torch.stack([sx, sy], -1))
        forward = rot @ shear @ zoom  # (n, 2, 2): maps source to output
        # affine_grid wants the inverse map: output coordinates -> where to sample input.
        inverse = torch.linalg.inv(forward)
        shift = -(inverse @ torch.stack([tx, ty], -1)[..., None])  # (n, 2, 1)
        return torch.cat([inverse, shift], -1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        mats = self.matrices(b, h, w).to(images.device, images.dtype)
        grid = F.affine_grid(mats, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                             align_corners=False)


class RandomBrightnessContrast:
    """Scale contrast and shift brightness of each image by up to ``amount`` (fractions).

    Shape: (B, C, H, W) float in [0, 1] -> same, clamped to [0, 1].
    """

    def __init__(self, amount: float = 0.2, generator: torch.Generator | None = None) -> None:
        self.amount, self.generator = amount, generator

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        b = images.shape[0]
        u = (torch.rand(2, b, 1, 1, 1, generator=self.generator) * 2 - 1) * self.amount
        return (images * (1 + u[0].to(images.dtype)) + u[1].to(images.dtype)).clamp(0, 1)


class Chain:
    """Apply augmentations in order; they share one generator (saved to resume runs)."""

    def __init__(self, steps: list, generator: torch.Generator) -> None:
        self.steps, self.generator = steps, generator

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            images = step(images)
        return images


def rotate_as_new_classes(
    images: torch.Tensor, labels: torch.Tensor, turns: tuple[int, ...] = (0, 1, 2, 3)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Add copies rotated by multiples of 90 degrees, each rotation a class of its own.

    Class c rotated by t quarter turns becomes class ``c + i * num_classes`` where i is
    the position of t in ``turns`` (Santoro et al. 2016, Vinyals et al. 2016).

    Shape: (N, C, H, W), (N,) -> (N * len(turns), C, H, W), (N * len(turns),).
    """
    num_classes = int(labels.max()) + 1 if len(labels) else 0
    out_x = [torch.rot90(images, t, dims=(2, 3)) for t in turns]
    out_y = [labels + i * num_classes for i in range(len(turns))]
    return torch.cat(out_x), torch.cat(out_y)
