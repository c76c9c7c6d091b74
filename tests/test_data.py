"""Tests for siamkit.data: safe zip extraction, mirror/cache/download fetching, image folders,
and the real Omniglot background set and Lake's one-shot runs."""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
import re
import struct
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from safetensors.torch import save_file

from siamkit.data import (
    DatasetError,
    cache_dir,
    extract_zip,
    fetch,
    load_image,
    load_image_folder,
    load_lake_runs,
    load_omniglot,
    mirror_dir,
    scan_folder,
)
from siamkit.data.images import ImageDataset, check_formats
from siamkit.data.omniglot import OMNIGLOT_FILES


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _zip_bytes(members: dict[str, str], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buf.getvalue()


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode).save(path)
    return path


def _leftovers(folder: Path) -> list[str]:
    """Hidden temporary folders an extraction may have left next to its destination."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to download fails the test (tests replace this with a fake when needed)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture
def env(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """An empty tmp mirror and tmp cache: returns (mirror, cache)."""
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    mirror.mkdir()
    monkeypatch.setenv("SIAMKIT_MIRROR", str(mirror))
    monkeypatch.setenv("SIAMKIT_DATA", str(cache))
    return mirror, cache


# ---------------------------------------------------------------- settings


def test_cache_and_mirror_dirs_follow_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SIAMKIT_DATA", str(tmp_path / "c"))
    monkeypatch.delenv("SIAMKIT_MIRROR", raising=False)
    assert cache_dir() == tmp_path / "c"
    assert mirror_dir() is None
    monkeypatch.setenv("SIAMKIT_MIRROR", str(tmp_path / "m"))
    assert mirror_dir() == tmp_path / "m"
    monkeypatch.delenv("SIAMKIT_DATA")
    assert cache_dir() == Path.home() / ".cache" / "siamkit"


# ---------------------------------------------------------------- extract_zip


def test_extract_good_zip(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip_bytes({"top/x.txt": "hello", "top/sub/y.txt": "world"}))
    dest = tmp_path / "out" / "a"
    assert extract_zip(archive, dest) == dest
    assert (dest / "top" / "x.txt").read_text() == "hello"
    assert (dest / "top" / "sub" / "y.txt").read_text() == "world"
    assert (dest / ".complete").is_file()
    assert _leftovers(dest.parent) == []


def test_extract_is_idempotent(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip_bytes({"x.txt": "one"}))
    dest = tmp_path / "out"
    extract_zip(archive, dest)
    (dest / "x.txt").write_text("edited")
    archive.write_bytes(b"no longer a zip")  # a second call must not even read it
    assert extract_zip(archive, dest) == dest
    assert (dest / "x.txt").read_text() == "edited"


def test_extract_replaces_an_incomplete_destination(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip_bytes({"x.txt": "fresh"}))
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "stale.txt").write_text("half-extracted")  # no .complete marker
    extract_zip(archive, dest)
    assert sorted(p.name for p in dest.iterdir()) == [".complete", "x.txt"]


def test_extract_keeps_the_copy_another_process_finished_first(tmp_path, monkeypatch):
    """Two processes extracting at once: the one finishing second keeps the first's folder
    (which may be in use) and leaves no temporary folder of its own."""
    import zipfile

    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip_bytes({"x.txt": "mine"}))
    dest = tmp_path / "out"
    real = zipfile.ZipFile.extractall

    def racing(self, path=None, *args, **kwargs):
        dest.mkdir()
        (dest / "x.txt").write_text("theirs")
        (dest / ".complete").write_text("a.zip")  # the other process renamed its copy in
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "extractall", racing)
    assert extract_zip(archive, dest) == dest
    assert (dest / "x.txt").read_text() == "theirs"
    assert _leftovers(tmp_path) == []


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _garbage(data: bytes) -> bytes:
    return b"this is not a zip file at all" * 10


def _flipped_deflate(data: bytes) -> bytes:
    # damage the compressed stream of the first member (its local header is 30 + name bytes)
    out = bytearray(data)
    start = 30 + len("member.txt")
    for i in range(start + 5, start + 40):
        out[i] ^= 0xFF
    return bytes(out)


@pytest.mark.parametrize("damage", [_truncated, _garbage, _flipped_deflate])
def test_extract_corrupt_zip_raises_and_leaves_nothing(tmp_path, damage):
    good = _zip_bytes({"member.txt": "some text that compresses well " * 200})
    archive = tmp_path / "bad.zip"
    archive.write_bytes(damage(good))
    dest = tmp_path / "out" / "bad"
    with pytest.raises(DatasetError, match="bad.zip"):
        extract_zip(archive, dest)
    assert not dest.exists()
    assert _leftovers(dest.parent) == []


def test_extract_stored_member_with_bad_crc_names_member(tmp_path):
    good = _zip_bytes({"member.txt": "abcdefgh" * 20}, zipfile.ZIP_STORED)
    data = bytearray(good)
    data[30 + len("member.txt") + 3] ^= 0xFF  # stored bytes change, the CRC does not
    archive = tmp_path / "crc.zip"
    archive.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="corrupt member 'member.txt'"):
        extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- fetch


def test_fetch_from_mirror_subdir_with_upstream_md5(env):
    mirror, _ = env
    data = _zip_bytes({"x": "1"})
    (mirror / "omniglot").mkdir()
    (mirror / "omniglot" / "f.zip").write_bytes(data)
    (mirror / "f.zip").write_bytes(b"the root copy must lose to the subdir copy")
    assert fetch("f.zip", "https://example.invalid/f.zip", _md5(data), "omniglot") == \
        mirror / "omniglot" / "f.zip"


def test_fetch_from_mirror_root(env):
    mirror, _ = env
    data = _zip_bytes({"x": "1"})
    (mirror / "f.zip").write_bytes(data)
    assert fetch("f.zip", None, _md5(data), "omniglot") == mirror / "f.zip"


def test_fetch_accepts_md5_declared_in_readme(env):
    mirror, _ = env
    data = _zip_bytes({"x": "rebuilt"})
    (mirror / "f.zip").write_bytes(data)
    (mirror / "README.md").write_text(
        "# files\n\n"
        "| other.zip | 0123456789abcdef0123456789abcdef |\n"
        f"| `f.zip` | md5 `{_md5(data).upper()}` |\n")
    assert fetch("f.zip", None, "0" * 32, "sub") == mirror / "f.zip"


def test_fetch_accepts_digests_on_the_lines_after_the_name(env):
    mirror, _ = env
    data = _zip_bytes({"x": "rebuilt"})
    (mirror / "f.zip").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    (mirror / "README.md").write_text(f"* `f.zip` was rebuilt, so its bytes\n  (sha256 `{sha}`)\n"
                                      "  differ from upstream's.\n")
    assert fetch("f.zip", None, "0" * 32, "sub") == mirror / "f.zip"


def test_fetch_accepts_md5_file(env):
    mirror, _ = env
    data = _zip_bytes({"x": "rebuilt"})
    (mirror / "sub").mkdir()
    (mirror / "sub" / "f.zip").write_bytes(data)
    (mirror / "sub" / "f.zip.md5").write_text(f"{_md5(data)}  f.zip\n")
    assert fetch("f.zip", None, "0" * 32, "sub") == mirror / "sub" / "f.zip"


@pytest.mark.parametrize("declare", ["readme", "md5file"])
def test_fetch_rejects_declared_checksum_mismatch(env, declare):
    mirror, _ = env
    (mirror / "f.zip").write_bytes(_zip_bytes({"x": "damaged copy"}))
    wrong = "ab" * 16
    if declare == "readme":
        (mirror / "README.md").write_text(f"f.zip md5 {wrong}\n")
    else:
        (mirror / "f.zip.md5").write_text(wrong + "\n")
    with pytest.raises(DatasetError, match=r"f\.zip: checksum does not match"):
        fetch("f.zip", None, "cd" * 16, "sub")


def test_fetch_without_any_checksum_falls_back_with_warning(env, caplog):
    mirror, _ = env
    (mirror / "f.zip").write_bytes(_zip_bytes({"x": "1"}))
    with caplog.at_level(logging.WARNING, logger="siamkit.data.download"):
        assert fetch("f.zip", None, "0" * 32, "sub") == mirror / "f.zip"
    assert "no checksum declared" in caplog.text
    # and with no upstream md5 at all: nothing declared, so nothing to mismatch
    assert fetch("f.zip", None, None, "sub") == mirror / "f.zip"


def test_fetch_missing_everywhere_without_url_raises(env, monkeypatch):
    with pytest.raises(DatasetError, match="f.zip is not in the mirror.*no download address"):
        fetch("f.zip", None, None, "sub")
    monkeypatch.delenv("SIAMKIT_MIRROR")
    with pytest.raises(DatasetError, match="no download address"):
        fetch("f.zip", None, "0" * 32, "sub")


def test_fetch_uses_cached_download(env):
    _, cache = env
    data = b"cached bytes"
    target = cache / "downloads" / "sub" / "f.zip"
    target.parent.mkdir(parents=True)
    target.write_bytes(data)
    # the autouse fixture fails the test if this tries the network
    assert fetch("f.zip", "https://example.invalid/f.zip", _md5(data), "sub") == target


def _fake_urlopen(monkeypatch, payload: bytes) -> list[str]:
    calls: list[str] = []

    def urlopen(url, timeout=None):
        calls.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


def test_fetch_downloads_when_absent_and_checks_md5(env, monkeypatch):
    _, cache = env
    payload = b"downloaded archive"
    calls = _fake_urlopen(monkeypatch, payload)
    path = fetch("f.zip", "https://example.invalid/f.zip", _md5(payload), "sub")
    assert path == cache / "downloads" / "sub" / "f.zip"
    assert path.read_bytes() == payload
    assert calls == ["https://example.invalid/f.zip"]
    assert _leftovers(path.parent) == []


def test_fetch_redownloads_a_damaged_cached_file(env, monkeypatch):
    _, cache = env
    payload = b"good bytes"
    target = cache / "downloads" / "sub" / "f.zip"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"damaged")
    calls = _fake_urlopen(monkeypatch, payload)
    assert fetch("f.zip", "https://example.invalid/f.zip", _md5(payload), "sub") == target
    assert target.read_bytes() == payload and len(calls) == 1


def test_fetch_download_with_wrong_md5_keeps_nothing(env, monkeypatch):
    _, cache = env
    _fake_urlopen(monkeypatch, b"tampered")
    with pytest.raises(DatasetError, match=r"md5 .* expected 0{32}"):
        fetch("f.zip", "https://example.invalid/f.zip", "0" * 32, "sub")
    folder = cache / "downloads" / "sub"
    assert list(folder.iterdir()) == []


def test_fetch_download_failure_is_a_dataset_error(env, monkeypatch):
    def urlopen(url, timeout=None):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    with pytest.raises(DatasetError, match="could not download https://example.invalid/f.zip"):
        fetch("f.zip", "https://example.invalid/f.zip", None, "sub")


# ---------------------------------------------------------------- load_image


def test_load_png_grayscale(tmp_path):
    pixels = np.arange(24).reshape(4, 6) * 10
    path = _save(tmp_path / "a.png", pixels)
    t = load_image(path, None)
    assert t.dtype == torch.uint8 and t.shape == (1, 4, 6)
    assert t[0].tolist() == pixels.tolist()


def test_load_pgm(tmp_path):
    pixels = np.array([[0, 50, 100], [150, 200, 255]])
    path = _save(tmp_path / "face.pgm", pixels)
    assert load_image(path, None)[0].tolist() == pixels.tolist()


def test_load_rgb(tmp_path):
    pixels = np.zeros((2, 3, 3), dtype=np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 10, 20, 30
    pixels[1, 2] = (90, 90, 90)
    path = _save(tmp_path / "c.png", pixels)
    rgb = load_image(path, None, channels=3)
    assert rgb.shape == (3, 2, 3) and rgb.dtype == torch.uint8
    assert rgb[:, 0, 0].tolist() == [10, 20, 30]
    assert rgb[:, 1, 2].tolist() == [90, 90, 90]
    gray = load_image(path, None, channels=1)
    assert gray.shape == (1, 2, 3)
    assert gray[0, 1, 2] == 90  # equal channels convert to that value


def test_load_gray_as_rgb_repeats_the_channel(tmp_path):
    path = _save(tmp_path / "g.png", np.full((2, 2), 77))
    assert load_image(path, None, channels=3).tolist() == [[[77, 77], [77, 77]]] * 3


def test_load_resize(tmp_path):
    path = _save(tmp_path / "r.png", np.full((10, 20), 123))
    assert load_image(path, 5).shape == (1, 5, 5)
    t = load_image(path, (4, 8))  # (height, width)
    assert t.shape == (1, 4, 8)
    assert (t == 123).all()  # a constant image stays constant


def test_load_invert(tmp_path):
    pixels = np.array([[0, 255], [100, 30]])
    path = _save(tmp_path / "i.png", pixels)
    assert load_image(path, None, invert=True)[0].tolist() == [[255, 0], [155, 225]]


def test_load_one_bit_png_with_invert_makes_ink_bright(tmp_path):
    # Omniglot's PNGs are 1-bit: white paper (True), black ink (False)
    bits = np.ones((3, 3), dtype=bool)
    bits[1, 1] = False
    path = tmp_path / "bit.png"
    Image.fromarray(bits).save(path)
    assert load_image(path, None, invert=True)[0].tolist() == [[0, 0, 0], [0, 255, 0], [0, 0, 0]]


def test_load_non_image_names_the_file(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(DatasetError, match=r"notes\.png: not a readable image"):
        load_image(text, None)
    noise = np.random.default_rng(0).integers(0, 256, (40, 40))  # incompressible pixel data
    good = _save(tmp_path / "cut.png", noise).read_bytes()
    cut = tmp_path / "truncated.png"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match=r"truncated\.png"):
        load_image(cut, None)
    with pytest.raises(DatasetError, match=r"missing\.png"):
        load_image(tmp_path / "missing.png", None)


def _encoded(fmt: str, mode: str = "RGB", size: tuple[int, int] = (12, 10), **kw) -> bytes:
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    img = Image.fromarray(((x * 20 + y * 7) % 256).astype(np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize(("fmt", "mode"), [("DDS", "RGBA"), ("QOI", "RGBA"), ("ICO", "RGBA"),
                                           ("SGI", "RGB"), ("PCX", "RGB")])
def test_load_image_opens_only_the_accepted_formats(tmp_path, fmt, mode):
    path = tmp_path / "looks.png"
    path.write_bytes(_encoded(fmt, mode))
    with pytest.raises(DatasetError, match=rf"looks\.png: format {fmt} is not accepted "
                                           rf"\(accepted: PNG, JPEG, BMP, TIFF, GIF, WEBP, PPM\)"):
        load_image(path, 8)
    assert load_image(path, 8, formats=("png", fmt.lower())).shape == (1, 8, 8)
    with pytest.raises(DatasetError, match="format PNG is not accepted"):
        load_image(_save(tmp_path / "a.png", np.zeros((4, 4))), 8, formats="jpg, tif")


def test_default_formats_read_every_allowed_kind(tmp_path):
    for fmt, mode, kw in [("PNG", "L", {}), ("PNG", "P", {}), ("JPEG", "RGB", {}),
                          ("BMP", "RGB", {}), ("TIFF", "L", {"compression": "tiff_lzw"}),
                          ("GIF", "P", {}), ("WEBP", "RGB", {}), ("PPM", "1", {}),
                          ("PPM", "L", {}), ("MPO", "RGB", {"save_all": True})]:
        path = tmp_path / f"x.{fmt.lower()}"
        path.write_bytes(_encoded(fmt, mode, **kw))
        assert load_image(path, (5, 6)).shape == (1, 5, 6), (fmt, mode)


def test_check_formats_names_an_unknown_format():
    assert check_formats("png, JPG,pgm,tif") == ("PNG", "JPEG", "PPM", "TIFF")
    assert check_formats(["PBM", "PPM"]) == ("PPM",)
    with pytest.raises(ValueError, match="image format 'HEIC' is not one Pillow opens"):
        check_formats(["PNG", "HEIC"])
    with pytest.raises(ValueError, match="no image format given"):
        check_formats([])


@pytest.mark.parametrize("fmt", ["QOI", "DDS"])
def test_a_truncated_file_of_an_accepted_format_is_a_dataset_error(tmp_path, fmt):
    # Pillow's QOI and DDS decoders raise ValueError ("not enough image data") on these
    good = _encoded(fmt, "RGBA", (40, 40))
    path = tmp_path / "cut.img"
    path.write_bytes(good[: len(good) * 2 // 3])
    with pytest.raises(DatasetError, match=r"cut\.img: not a readable image"):
        load_image(path, 8, formats=(fmt,))


@pytest.mark.parametrize("error", [
    ValueError("not enough image data"), RuntimeError("decoder"), NotImplementedError("mode"),
    AttributeError("'NoneType' object has no attribute 'read'"), struct.error("unpack"),
    IndexError("list index out of range"), TypeError("bad"), MemoryError(), EOFError(),
    zlib.error("Error -3 while decompressing data"), SyntaxError("broken"),
    OSError("line one\nline two"),
])
def test_every_decoder_failure_is_one_dataset_error_naming_the_file(tmp_path, monkeypatch,
                                                                     caplog, error):
    path = _save(tmp_path / "odd.png", np.zeros((4, 4)))

    def fail(self):
        raise error

    monkeypatch.setattr(ImageFile.ImageFile, "load", fail)
    with caplog.at_level(logging.DEBUG), \
            pytest.raises(DatasetError, match=r"odd\.png: not a readable image") as info:
        load_image(path, 8)
    assert "\n" not in str(info.value) and info.value.__cause__ is None
    ours = [r for r in caplog.records if r.name.startswith("siamkit")]
    assert len(ours) <= 1 and all(r.exc_info is None and "\n" not in r.getMessage()
                                  for r in ours)
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
def test_interrupts_pass_through_the_decode_boundary(tmp_path, monkeypatch, error):
    path = _save(tmp_path / "a.png", np.zeros((4, 4)))

    def stop(self):
        raise error

    monkeypatch.setattr(ImageFile.ImageFile, "load", stop)
    with pytest.raises(error):
        load_image(path, 8)


def _scene(w: int, h: int) -> Image.Image:
    """A smooth picture with an edge: what a resize must keep."""
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    a = 128 + 100 * np.sin(6 * x + 3 * y) * np.cos(4 * y)
    a[(x - 0.3) ** 2 + (y - 0.25) ** 2 < 0.02] = 20
    return Image.fromarray(a.clip(0, 255).astype(np.uint8)).convert("RGB")


@pytest.mark.parametrize(("fmt", "decoded"), [("JPEG", (200, 150)), ("PNG", (1600, 1200))])
def test_a_large_image_is_decoded_small_and_looks_the_same(tmp_path, monkeypatch, fmt, decoded):
    path = tmp_path / f"big.{fmt.lower()}"
    _scene(1600, 1200).save(path, fmt, quality=95)
    loaded, resized = [], []
    real_load, real_resize = ImageFile.ImageFile.load, Image.Image.resize

    def load(self):
        loaded.append(self.size)
        return real_load(self)

    def resize(self, size, *args, **kwargs):
        resized.append(self.size)
        return real_resize(self, size, *args, **kwargs)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    monkeypatch.setattr(Image.Image, "resize", resize)
    got = load_image(path, 48)[0].numpy().astype(float)
    monkeypatch.undo()
    # JPEG decodes at 1/8 (still over twice 48), PNG cannot; both are box-averaged to
    # between 2 and 4 times the output before the antialiased resize
    assert max(loaded) == decoded
    assert len(resized) == 1 and all(96 <= side < 192 for side in resized[0]), resized
    with Image.open(path) as img:
        full = img.convert("L").resize((48, 48), Image.Resampling.BILINEAR)  # the old path
    assert np.abs(got - np.asarray(full, dtype=float)).mean() < 2


def test_a_large_image_keeps_its_aspect_when_decoded_small(tmp_path):
    path = tmp_path / "wide.jpg"
    _scene(1600, 800).save(path, quality=95)
    got = load_image(path, 48, keep_aspect=True)[0].numpy().astype(float)
    assert (got[:12] == 0).all() and (got[36:] == 0).all() and got[12:36].min() > 0
    with Image.open(path) as img:
        full = np.asarray(img.convert("L").resize((48, 24), Image.Resampling.BILINEAR))
    assert np.abs(got[12:36] - full).mean() < 2


def test_images_over_the_pixel_limit_are_refused_from_their_header(env, tmp_path, monkeypatch):
    root = _flat_tree(tmp_path / "root")
    Image.new("1", (12000, 12000)).save(root / "b" / "bomb.png")  # 144 M pixels, 18 kB
    real_load = ImageFile.ImageFile.load

    def load(self):
        assert self.size[0] * self.size[1] < 10**6, f"decoded a {self.size} image"
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    with pytest.raises(DatasetError, match=r"bomb\.png: 12000 x 12000 pixels is over the "
                                           r"limits \(40000000 pixels, 16384 a side\)"):
        load_image_folder(root, size=6)
    (root / "b" / "bomb.png").unlink()
    with pytest.raises(DatasetError, match=r"0001_01\.png: 6 x 6 pixels is over the limits "
                                           r"\(35 pixels"):
        load_image_folder(root, max_pixels=35)
    with pytest.raises(DatasetError, match=r"6 x 6 pixels is over the limits .* 5 a side"):
        load_image_folder(root, max_side=5, use_cache=False)
    assert len(load_image_folder(root, max_pixels=36, max_side=6)) == 9


@pytest.mark.parametrize("size", [0, (4, -1), (4,), "28", (2.5, 3)])
def test_load_image_names_a_bad_size(tmp_path, size):
    path = _save(tmp_path / "a.png", np.zeros((4, 4)))
    with pytest.raises(ValueError, match="size must be a positive side or"):
        load_image(path, size)


def test_load_bad_channels(tmp_path):
    path = _save(tmp_path / "a.png", np.zeros((2, 2)))
    with pytest.raises(ValueError, match="channels must be 1 or 3, got 2"):
        load_image(path, None, channels=2)


# ---------------------------------------------------------------- image folders

# (group, class, file name, constant pixel value); every image holds one value so the
# loaded tensors can be traced back to their files.
TREE = [
    ("Latin", "a", "0001_01.png", 10),
    ("Latin", "a", "0001_02.png", 11),
    ("Latin", "a", "0001_03.png", 12),
    ("Latin", "b", "0002_01.png", 20),
    ("Latin", "b", "0002_02.png", 21),
    ("Greek", "alpha", "0003_02.png", 30),
    ("Greek", "alpha", "0003_03.png", 31),
    ("Greek", "beta", "0004_01.png", 40),
]


def _grouped_tree(root: Path, size: tuple[int, int] = (6, 6)) -> Path:
    for group, cls, name, value in TREE:
        _save(root / group / cls / name, np.full(size, value))
    (root / "Latin" / "a" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    _save(root / ".hidden" / "h" / "x.png", np.zeros(size))
    return root


def _flat_tree(root: Path) -> Path:
    for _, cls, name, value in TREE:
        _save(root / cls / name, np.full((6, 6), value))
    _save(root / "b" / "nested" / "0002_09.png", np.full((6, 6), 29))  # counts for class b
    return root


def _values(ds) -> list[int]:
    return [int(img[0, 0, 0]) for img in ds.images]


def test_scan_flat(tmp_path):
    items = scan_folder(_flat_tree(tmp_path / "root"))
    names = [(Path(p).name, c, g) for p, c, g in items]
    assert ("0001_01.png", "a", None) in names
    assert ("0002_09.png", "b", None) in names
    assert sorted({c for _, c, _ in names}) == ["a", "alpha", "b", "beta"]
    assert len(items) == 9


def test_scan_grouped(tmp_path):
    items = scan_folder(_grouped_tree(tmp_path / "root"), group_depth=1)
    assert len(items) == 8  # the txt file and the hidden folder are skipped
    classes = {(c, g) for _, c, g in items}
    assert classes == {("Latin/a", "Latin"), ("Latin/b", "Latin"),
                       ("Greek/alpha", "Greek"), ("Greek/beta", "Greek")}


def test_scan_errors(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        scan_folder(tmp_path / "absent")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images found"):
        scan_folder(tmp_path / "empty")
    with pytest.raises(ValueError, match="group_depth must be 0 or 1, got 2"):
        scan_folder(tmp_path / "empty", group_depth=2)


def test_load_folder_flat(env, tmp_path):
    ds = load_image_folder(_flat_tree(tmp_path / "root"))
    assert ds.class_names == ["a", "alpha", "b", "beta"]
    assert ds.images.shape == (9, 1, 6, 6) and ds.images.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64
    assert ds.groups is None and ds.group_names is None and ds.drawers is None
    assert len(ds) == 9 and ds.num_classes == 4
    # every image sits with its own label and path
    for value, label, path in zip(_values(ds), ds.labels.tolist(), ds.paths, strict=True):
        assert Path(path).parent.name in (ds.class_names[label], "nested")
        assert value // 10 == {"a": 1, "b": 2, "alpha": 3, "beta": 4}[ds.class_names[label]]


def test_load_folder_grouped_with_drawers(env, tmp_path):
    ds = load_image_folder(_grouped_tree(tmp_path / "root"), group_depth=1,
                           drawer_pattern=r"_(\d+)\.png$")
    assert ds.class_names == ["Greek/alpha", "Greek/beta", "Latin/a", "Latin/b"]
    assert ds.group_names == ["Greek", "Latin"]
    assert ds.groups.tolist() == [0, 0, 1, 1]
    files = [Path(p).name for p in ds.paths]
    drawer_of = {"01": 0, "02": 1, "03": 2}
    assert ds.drawers.tolist() == [drawer_of[f[5:7]] for f in files]
    assert _values(ds) == [30, 31, 40, 10, 11, 12, 20, 21]
    assert ds.labels.tolist() == [0, 0, 1, 2, 2, 2, 3, 3]


def test_drawer_pattern_must_match_every_file(env, tmp_path):
    root = _grouped_tree(tmp_path / "root")
    _save(root / "Greek" / "beta" / "odd.png", np.full((6, 6), 41))
    with pytest.raises(DatasetError, match="does not match the file name 'odd.png'"):
        load_image_folder(root, group_depth=1, drawer_pattern=r"_(\d+)\.png$")


def test_drawer_pattern_must_be_a_regex_with_a_group(env, tmp_path):
    root = _grouped_tree(tmp_path / "root")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        load_image_folder(root, group_depth=1, drawer_pattern="_(")
    with pytest.raises(ValueError, match="needs a group"):
        load_image_folder(root, group_depth=1, drawer_pattern=r"\.png$")


def test_min_per_class_drops_small_classes(env, tmp_path):
    ds = load_image_folder(_grouped_tree(tmp_path / "root"), group_depth=1, min_per_class=2)
    assert ds.class_names == ["Greek/alpha", "Latin/a", "Latin/b"]  # beta has 1 image
    assert 40 not in _values(ds)
    assert ds.labels.max() == 2


def test_mixed_sizes_need_a_size(env, tmp_path):
    root = _flat_tree(tmp_path / "root")
    _save(root / "a" / "big.png", np.full((8, 5), 99))
    with pytest.raises(DatasetError, match="different sizes.*set a size"):
        load_image_folder(root)
    ds = load_image_folder(root, size=(4, 3))
    assert ds.images.shape == (10, 1, 4, 3)


def test_load_folder_channels_and_invert(env, tmp_path):
    ds = load_image_folder(_flat_tree(tmp_path / "root"), channels=3, invert=True, size=3)
    assert ds.images.shape == (9, 3, 3, 3)
    assert sorted(int(v) for v in ds.images[:, 0, 0, 0]) == \
        sorted(255 - v for v in [10, 11, 12, 20, 21, 29, 30, 31, 40])


def test_cache_round_trip_gives_identical_tensors(env, tmp_path, caplog):
    _, cache = env
    root = _grouped_tree(tmp_path / "root")
    first = load_image_folder(root, group_depth=1, size=4)
    files = list((cache / "tensors").glob("*.safetensors"))
    assert len(files) == 1
    with caplog.at_level(logging.INFO, logger="siamkit.data.images"):
        second = load_image_folder(root, group_depth=1, size=4)
    assert "loaded cached images" in caplog.text
    assert torch.equal(first.images, second.images)
    assert torch.equal(first.labels, second.labels)
    assert first.class_names == second.class_names and first.paths == second.paths
    # another size is another cache entry, not the same tensor
    assert load_image_folder(root, group_depth=1, size=3).images.shape[-1] == 3
    assert len(list((cache / "tensors").glob("*.safetensors"))) == 2


def test_cache_is_rebuilt_when_damaged_or_files_change(env, tmp_path):
    _, cache = env
    root = _flat_tree(tmp_path / "root")
    first = load_image_folder(root)
    (pt,) = (cache / "tensors").glob("*.safetensors")
    pt.write_bytes(b"garbage")
    assert torch.equal(load_image_folder(root).images, first.images)
    # an edited image changes the key: the new pixels are loaded, not the stale cache
    _save(root / "a" / "0001_01.png", np.full((6, 6), 200))
    assert 200 in _values(load_image_folder(root))


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda pt: pt.write_bytes(b"garbage"), "cannot read the cached images"),
    (lambda pt: pt.write_bytes(b""), "cannot read the cached images"),
    (lambda pt: save_file({"pixels": torch.zeros(1)}, str(pt)),
     "hold the tensors ['pixels'], not 9 images"),
    (lambda pt: save_file({"images": torch.zeros(2, 1, 6, 6, dtype=torch.uint8)}, str(pt)),
     r"hold a (2, 1, 6, 6) torch.uint8 tensor, not 9 images"),
    (lambda pt: pt.write_bytes(pickle.dumps(torch.zeros(9, 1, 6, 6, dtype=torch.uint8))),
     "cannot read the cached images"),
], ids=["garbage", "empty", "other-tensors", "too-few", "a-pickle"])
def test_a_damaged_cache_is_logged_in_one_line_and_rebuilt(env, tmp_path, caplog, damage,
                                                           reason):
    _, cache = env
    root = _flat_tree(tmp_path / "root")
    first = load_image_folder(root)
    (pt,) = (cache / "tensors").glob("*.safetensors")
    damage(pt)
    with caplog.at_level(logging.INFO, logger="siamkit.data.images"):
        again = load_image_folder(root)
    assert torch.equal(again.images, first.images)
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    message = warning.getMessage()
    assert reason in message and str(pt) in message and message.endswith("rebuilding them")
    assert "\n" not in message and warning.exc_info is None
    assert "loaded cached images" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="siamkit.data.images"):
        assert torch.equal(load_image_folder(root).images, first.images)  # rebuilt: read
    assert "loaded cached images" in caplog.text and "WARNING" not in caplog.text


def test_no_cache_writes_nothing(env, tmp_path):
    _, cache = env
    load_image_folder(_flat_tree(tmp_path / "root"), use_cache=False)
    assert not (cache / "tensors").exists()


def test_subset_classes_relabels_in_given_order(env, tmp_path):
    ds = load_image_folder(_grouped_tree(tmp_path / "root"), group_depth=1,
                           drawer_pattern=r"_(\d+)\.png$")
    # classes: 0 Greek/alpha, 1 Greek/beta, 2 Latin/a, 3 Latin/b
    sub = ds.subset_classes([3, 0])
    assert sub.class_names == ["Latin/b", "Greek/alpha"]
    assert sub.num_classes == 2
    pairs = sorted(zip(_values(sub), sub.labels.tolist(), strict=True))
    assert pairs == [(20, 0), (21, 0), (30, 1), (31, 1)]
    assert sub.groups.tolist() == [1, 0] and sub.group_names == ["Greek", "Latin"]
    assert [Path(p).name for p in sub.paths] == \
        [Path(ds.paths[i]).name for i in range(len(ds)) if ds.labels[i] in (0, 3)]
    keep = np.isin(ds.labels.numpy(), [0, 3])
    assert sub.drawers.tolist() == ds.drawers[keep].tolist()


def test_subset_groups(env, tmp_path):
    ds = load_image_folder(_grouped_tree(tmp_path / "root"), group_depth=1)
    latin = ds.subset_groups([ds.group_names.index("Latin")])
    assert latin.class_names == ["Latin/a", "Latin/b"]
    assert latin.group_names == ["Latin"] and latin.groups.tolist() == [0, 0]
    assert sorted(_values(latin)) == [10, 11, 12, 20, 21]
    assert latin.labels.tolist() == [0, 0, 0, 1, 1]
    flat = load_image_folder(_flat_tree(tmp_path / "flat"))
    with pytest.raises(ValueError, match="no groups"):
        flat.subset_groups([0])


def test_first_items_take_a_tables_rows_in_row_order():
    """Enrolling one shot a class takes each class's first row: t.csv#2 before t.csv#10
    (moved from test_tabular, where it tested the CLI's private _first_shots)."""
    data = ImageDataset(torch.zeros(4, 3), torch.tensor([0, 0, 1, 1]), ["a", "b"],
                        ["t.csv#10", "t.csv#2", "t.csv#11", "t.csv#3"])
    assert data.first_items(1) == [1, 3]
    assert sorted(data.first_items(None)) == [0, 1, 2, 3]


def test_first_items_of_image_files_go_by_path(env, tmp_path):
    ds = load_image_folder(_flat_tree(tmp_path / "flat"))
    firsts = ds.first_items(1)
    assert sorted(ds.labels[firsts].tolist()) == list(range(ds.num_classes))
    for i in firsts:  # each the first file (by path) of its class
        own = [p for p, c in zip(ds.paths, ds.labels.tolist(), strict=True)
               if c == int(ds.labels[i])]
        assert ds.paths[i] == min(own)
    two = ds.first_items(2)
    assert len(two) == sum(min(2, int((ds.labels == c).sum())) for c in range(ds.num_classes))


# ---------------------------------------------------------------- real data (the mirror)


@pytest.fixture(scope="module")
def background(mirror_root):
    """Omniglot's background set at 28 px, loaded once (the user cache keeps it between runs)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIAMKIT_MIRROR", str(mirror_root))
        mp.setattr(urllib.request, "urlopen", _refuse_network)
        return load_omniglot("background", size=28)


@pytest.fixture(scope="module")
def lake_runs(mirror_root):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIAMKIT_MIRROR", str(mirror_root))
        mp.setattr(urllib.request, "urlopen", _refuse_network)
        return load_lake_runs(28)


def _refuse_network(*args, **kwargs):
    raise AssertionError("network access attempted")


def test_real_mirror_copy_is_accepted_by_declared_checksum(mirror):
    # the mirror's images_background.zip differs from upstream's bytes; its README declares it
    url, md5 = OMNIGLOT_FILES["images_background.zip"]
    path = fetch("images_background.zip", url, md5, "omniglot")
    assert path == mirror / "omniglot" / "images_background.zip"
    url, md5 = OMNIGLOT_FILES["all_runs.zip"]
    assert fetch("all_runs.zip", url, md5, "omniglot") == mirror / "omniglot" / "all_runs.zip"


def test_omniglot_background_counts(background):
    ds = background
    assert ds.num_classes == 964
    assert len(ds.group_names) == 30
    assert ds.groups.shape == (964,) and len(np.unique(ds.groups)) == 30
    assert len(np.unique(ds.drawers)) == 20
    assert (torch.bincount(ds.labels) == 20).all()  # every character has 20 drawings
    # the 20 drawings of a character come from 20 different drawers
    first = ds.drawers[(ds.labels == 0).numpy()]
    assert sorted(first.tolist()) == list(range(20))
    # a class is named <alphabet>/<character> and belongs to that alphabet
    c = 500
    assert ds.class_names[c].split("/")[0] == ds.group_names[ds.groups[c]]


def test_omniglot_images_are_bright_ink_on_zero(background):
    images = background.images
    assert images.dtype == torch.uint8
    assert images.shape == (19280, 1, 28, 28)
    assert images.float().mean() < 50  # mostly background, which is 0 after inverting
    assert images[:, :, 0, 0].float().mean() < 5  # corners are paper
    # every drawing has bright ink (thin strokes lose some brightness when downsampled)
    assert images.amax(dim=(1, 2, 3)).min() > 100


def test_lake_runs(lake_runs):
    assert [r.name for r in lake_runs] == [f"run{i:02d}" for i in range(1, 21)]
    for run in lake_runs:
        assert run.references.shape == (20, 1, 28, 28) and run.references.dtype == torch.uint8
        assert run.queries.shape == (20, 1, 28, 28) and run.queries.dtype == torch.uint8
        assert sorted(run.answers.tolist()) == list(range(20))
        assert run.queries.float().mean() < 50  # inverted like the training images


def test_lake_run01_answers_match_class_labels(lake_runs, mirror_root):
    # read the answer key straight from the mirror's archive, independently of the loader
    with zipfile.ZipFile(mirror_root / "omniglot" / "all_runs.zip") as zf:
        names = zf.namelist()
        member = next(n for n in names if n.endswith("run01/class_labels.txt"))
        lines = zf.read(member).decode().split()
        item01 = zf.read(next(n for n in names if n.endswith("run01/test/item01.png")))
    pairs = dict(zip(lines[0::2], lines[1::2], strict=True))
    expected = [int(re.search(r"class(\d+)\.png$", pairs[f"run01/test/item{i:02d}.png"])[1]) - 1
                for i in range(1, 21)]
    assert pairs["run01/test/item01.png"] == "run01/training/class08.png"
    assert lake_runs[0].answers[0] == 7
    assert lake_runs[0].answers.tolist() == expected
    # the first query is item01, preprocessed as training images are
    img = Image.open(io.BytesIO(item01)).convert("L").resize((28, 28), Image.Resampling.BILINEAR)
    assert lake_runs[0].queries[0, 0].tolist() == (255 - np.asarray(img)).tolist()


def test_groups_from_class_names_keep_genuine_and_forgeries_together(env, tmp_path):
    from siamkit.data.images import with_groups_from_names

    for name in ("001", "001_forg", "002", "002_forg"):
        _save(tmp_path / "sig" / name / "a.png", np.full((4, 4), 9))
    ds = with_groups_from_names(load_image_folder(tmp_path / "sig"), r"^(\d+)")
    assert ds.group_names == ["001", "002"] and ds.groups.tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="gives no group for class"):
        with_groups_from_names(ds, r"^(x)")


def test_pair_csv_header_detection_and_bom(tmp_path):
    from siamkit.data.pairs import read_pair_csv

    for name in ("a.png", "b.png", "c.png", "d.png"):
        _save(tmp_path / name, np.full((4, 4), 7))
    # headerless; the first row's label differs from every later one: still data
    (tmp_path / "p.csv").write_text("a.png,b.png,1\nc.png,d.png,0\na.png,c.png,0\n")
    pl = read_pair_csv(tmp_path / "p.csv", tmp_path)
    assert len(pl) == 3 and pl.same.tolist() == [True, False, False]
    # a header with a byte-order mark
    (tmp_path / "h.csv").write_text("\ufeffimg1,img2,label\na.png,b.png,1\nc.png,d.png,0\n")
    assert len(read_pair_csv(tmp_path / "h.csv", tmp_path)) == 2


def test_skilled_pairs_hand_counted():
    from siamkit.data.pairs import skilled_pairs

    # writer 001: 3 genuine, 2 forged; writer 002: 2 genuine, 1 forged
    classes = ["001"] * 3 + ["001_forg"] * 2 + ["002"] * 2 + ["002_forg"]
    groups = ["001"] * 5 + ["002"] * 3
    left, right, same = skilled_pairs(classes, groups)
    # positives: C(3,2) + C(2,2) = 4; negatives: 3*2 + 2*1 = 8; never across writers
    assert same.sum() == 4 and (~same).sum() == 8
    assert all(groups[a] == groups[b] for a, b in zip(left, right, strict=True))
    assert all(classes[a] == groups[a] for a in left)  # one side is always genuine
    with pytest.raises(ValueError, match="no skilled pairs"):
        skilled_pairs(["x_forg"], ["x"])
