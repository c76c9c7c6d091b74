"""Tests for siamkit.augment: batched random affine distortions and rotations as new classes."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from siamkit.augment import RandomAffine, rotate_as_new_classes


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _dot(h: int, w: int, row: int, col: int) -> torch.Tensor:
    img = torch.zeros(1, 1, h, w)
    img[0, 0, row, col] = 1.0
    return img


class _AlwaysMax(RandomAffine):
    """Every component at the top of its range, so a transform is known exactly."""

    def _uniform(self, n: int, lo: float, hi: float, identity: float = 0.0) -> torch.Tensor:
        return torch.full((n,), float(hi))


# ---------------------------------------------------------------- RandomAffine


def test_p_zero_is_identity():
    images = torch.rand(3, 2, 9, 11, generator=_gen(0))
    out = RandomAffine(p=0.0, generator=_gen(1))(images)
    assert_close(out, images, atol=1e-5, rtol=0)


def test_p_zero_matrices_are_identity():
    mats = RandomAffine(p=0.0).matrices(4, 16, 16)
    assert_close(mats, torch.tensor([[1.0, 0, 0], [0, 1, 0]]).expand(4, 2, 3))


def test_seeded_generator_is_deterministic():
    images = torch.rand(4, 1, 12, 12, generator=_gen(0))
    a = RandomAffine(p=1.0, generator=_gen(7))(images)
    b = RandomAffine(p=1.0, generator=_gen(7))(images)
    c = RandomAffine(p=1.0, generator=_gen(8))(images)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_each_image_gets_its_own_transform():
    images = torch.rand(1, 1, 12, 12, generator=_gen(0)).expand(4, 1, 12, 12).contiguous()
    out = RandomAffine(p=1.0, generator=_gen(0))(images)
    assert not torch.allclose(out[0], out[1])


def test_translation_by_one_pixel_moves_a_dot_one_pixel():
    aug = _AlwaysMax(rotation=0.0, shear=0.0, scale=(1.0, 1.0), translate=1.0, p=1.0)
    out = aug(_dot(7, 9, row=3, col=4))
    # +1 pixel in x (columns) and +1 in y (rows)
    assert_close(out, _dot(7, 9, row=4, col=5), atol=1e-5, rtol=0)


def test_translation_only_matrices_shift_by_pixels():
    h, w = 10, 20
    aug = RandomAffine(rotation=0.0, shear=0.0, scale=(1.0, 1.0), translate=2.0, p=1.0,
                       generator=_gen(3))
    mats = aug.matrices(50, h, w)
    assert_close(mats[:, :, :2], torch.eye(2).expand(50, 2, 2))
    # normalised shift of affine_grid (align_corners=False): one pixel is 2 / side
    shift_px = torch.stack([mats[:, 0, 2] * w / 2, mats[:, 1, 2] * h / 2])
    assert shift_px.abs().max() <= 2.0
    assert shift_px.abs().max() > 1.0  # the range is actually used


def test_sub_pixel_translation_moves_centre_of_mass():
    # bilinear sampling of a shifted dot keeps its mass and moves its centre by the shift
    h = w = 15
    aug = RandomAffine(rotation=0.0, shear=0.0, scale=(1.0, 1.0), translate=2.0, p=1.0,
                       generator=_gen(11))
    expected = -RandomAffine(rotation=0.0, shear=0.0, scale=(1.0, 1.0), translate=2.0, p=1.0,
                             generator=_gen(11)).matrices(1, h, w)[0, :, 2]
    out = aug(_dot(h, w, row=7, col=7))[0, 0]
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                                torch.arange(w, dtype=torch.float32), indexing="ij")
    assert_close(out.sum(), torch.tensor(1.0), atol=1e-5, rtol=0)
    moved = torch.stack([(out * cols).sum() - 7, (out * rows).sum() - 7])  # (dx, dy) pixels
    assert_close(moved, expected * torch.tensor([w / 2, h / 2]), atol=1e-4, rtol=0)


def test_scale_matrix_is_the_inverse_zoom():
    # affine_grid maps output to input coordinates, so a zoom of 2 samples at half the offset
    aug = _AlwaysMax(rotation=0.0, shear=0.0, scale=(2.0, 2.0), translate=0.0, p=1.0)
    mats = aug.matrices(1, 8, 8)
    assert_close(mats[0], torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_shape_and_dtype(dtype):
    images = torch.rand(5, 3, 10, 14, generator=_gen(0)).to(dtype)
    out = RandomAffine(generator=_gen(0))(images)
    assert out.shape == (5, 3, 10, 14)
    assert out.dtype == dtype


# ---------------------------------------------------------------- rotate_as_new_classes


def test_rotate_quarter_turns_and_label_offsets():
    images = torch.tensor([[[[1, 2], [3, 4]]], [[[5, 6], [7, 8]]]])  # (2, 1, 2, 2)
    labels = torch.tensor([0, 2])  # 3 classes: offsets are multiples of 3
    x, y = rotate_as_new_classes(images, labels)
    assert x.shape == (8, 1, 2, 2)
    assert y.tolist() == [0, 2, 3, 5, 6, 8, 9, 11]
    assert x[0, 0].tolist() == [[1, 2], [3, 4]]  # 0 turns
    assert x[2, 0].tolist() == [[2, 4], [1, 3]]  # 1 turn, counter-clockwise
    assert x[4, 0].tolist() == [[4, 3], [2, 1]]  # 2 turns
    assert x[6, 0].tolist() == [[3, 1], [4, 2]]  # 3 turns
    assert x[7, 0].tolist() == [[7, 5], [8, 6]]


def test_rotate_subset_of_turns_offsets_by_position():
    images = torch.arange(4.0).reshape(1, 1, 2, 2)
    x, y = rotate_as_new_classes(images, torch.tensor([1]), turns=(0, 2))
    assert y.tolist() == [1, 3]  # class 1 of 2, then class 1 + 1 * 2
    assert x[1, 0].tolist() == [[3.0, 2.0], [1.0, 0.0]]



def test_hflip_mirrors_and_brightness_stays_in_range():
    from siamkit.augment import RandomBrightnessContrast

    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 0] = 1.0  # a dot on the left edge
    flip = RandomAffine(rotation=0, shear=0, scale=(1, 1), translate=0, p=0.0, hflip=1.0)
    out = flip(x)
    assert_close(out[0, 0], x[0, 0].flip(-1), atol=1e-5, rtol=0)  # now on the right edge
    jitter = RandomBrightnessContrast(0.5, generator=_gen(0))
    y = jitter(torch.rand(16, 1, 4, 4))
    assert y.min() >= 0 and y.max() <= 1
    assert not torch.equal(y, jitter(torch.rand(16, 1, 4, 4)))
