"""Mutated images never crash a reader: a seeded fuzz of damaged files of many formats, sent
to the HTTP service and read through the library path the CLI uses (``ImageInput``,
``load_image_folder``). Every image is either read or refused with a 4xx / DatasetError
naming it, and nothing logs a traceback."""

from __future__ import annotations

import io
import logging
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siamkit.data.download import DatasetError
from siamkit.data.images import load_image_folder
from siamkit.inputs import ImageInput, InputSpec

SIZE = 28


def _picture(mode: str, size: tuple[int, int] = (24, 20)) -> Image.Image:
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = ((x * 9 + y * 5) % 256).astype(np.uint8)
    rgb = Image.fromarray(np.stack([base, base[::-1], (x * y % 256).astype(np.uint8)], -1))
    return rgb.quantize(16) if mode == "P" else rgb.convert(mode)


def _encode(mode: str, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    _picture(mode).save(buf, fmt, **options)
    return buf.getvalue()


def _psd(w: int = 8, h: int = 6) -> bytes:
    """A grayscale Photoshop file, by hand (Pillow reads PSD but cannot write it)."""
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 1, h, w, 8, 1)
    return header + struct.pack(">IIIH", 0, 0, 0, 0) + bytes(i * 7 % 256 for i in range(w * h))


def originals() -> dict[str, bytes]:
    """Small valid files: the accepted formats in several flavours, and others."""
    files = {
        "png_l.png": _encode("L", "PNG"), "png_rgb.png": _encode("RGB", "PNG"),
        "png_rgba.png": _encode("RGBA", "PNG"), "png_p.png": _encode("P", "PNG"),
        "png_1.png": _encode("1", "PNG"), "png_i16.png": _encode("I;16", "PNG"),
        "png_opt.png": _encode("RGB", "PNG", optimize=True),
        "jpeg.jpg": _encode("RGB", "JPEG"), "jpeg_l.jpg": _encode("L", "JPEG"),
        "jpeg_prog.jpg": _encode("RGB", "JPEG", progressive=True),
        "jpeg_cmyk.jpg": _encode("CMYK", "JPEG"),
        "mpo.jpg": _encode("RGB", "MPO", save_all=True),
        "bmp.bmp": _encode("RGB", "BMP"), "bmp_p.bmp": _encode("P", "BMP"),
        "tiff.tif": _encode("RGB", "TIFF"),
        "tiff_lzw.tif": _encode("L", "TIFF", compression="tiff_lzw"),
        "tiff_pack.tif": _encode("RGB", "TIFF", compression="packbits"),
        "gif.gif": _encode("P", "GIF"),
        "webp.webp": _encode("RGB", "WEBP"), "webp_ll.webp": _encode("RGBA", "WEBP",
                                                                    lossless=True),
        "ppm.ppm": _encode("RGB", "PPM"), "pgm.pgm": _encode("L", "PPM"),
        "pbm.pbm": _encode("1", "PPM"),
        # formats outside the allowlist, some behind an accepted extension
        "dds.png": _encode("RGBA", "DDS"), "qoi.png": _encode("RGBA", "QOI"),
        "ico.png": _encode("RGBA", "ICO"), "tga.png": _encode("RGB", "TGA",
                                                               compression="tga_rle"),
        "sgi.jpg": _encode("RGB", "SGI"), "pcx.bmp": _encode("RGB", "PCX"),
        "im.png": _encode("L", "IM"), "blp.png": _encode("P", "BLP"),
        "msp.png": _encode("1", "MSP"), "xbm.png": _encode("1", "XBM"),
        "spider.tif": _encode("F", "SPIDER"), "psd.png": _psd(),
    }
    ico = files["ico.png"]
    files["cur.png"] = ico[:2] + b"\2\0" + ico[4:]  # an ICO header says cursor: CUR
    return files


def mutants(seed: int = 0, per_file: int = 8) -> dict[str, bytes]:
    """``per_file`` damaged copies of each original: truncated, bits flipped (mostly in the
    header), another format's header spliced on, or a size field overwritten."""
    rng = random.Random(seed)
    orig = originals()
    names = sorted(orig)
    out: dict[str, bytes] = {}
    for name in names:
        stem, ext = name.rsplit(".", 1)
        for i in range(per_file):
            kind = rng.choice(["truncate", "flip", "splice", "splice", "field"])
            b = bytearray(orig[name])
            if kind == "truncate":
                b = b[: rng.randrange(len(b))]
            elif kind == "flip":
                for _ in range(rng.randint(1, 8)):
                    pos = rng.randrange(min(len(b), 64) if rng.random() < 0.6 else len(b))
                    b[pos] ^= 1 << rng.randrange(8)
            elif kind == "splice":
                other = orig[rng.choice(names)]
                head = other[: rng.randint(4, min(64, len(other)))]
                b = bytearray(head) + b[rng.randint(0, min(64, len(b))):]
            else:
                pos = rng.randrange(min(len(b) - 4, 48))
                b[pos : pos + 4] = rng.choice([b"\xff\xff\xff\x7f", b"\0\0\0\0", b"\0\0\1\0",
                                               b"\xff\xff\xff\xff"])
            out[f"{stem}_{i}_{kind}.{ext}"] = bytes(b)
    return {**{f"orig_{k}": v for k, v in orig.items()}, **out}


@pytest.fixture(scope="module")
def corpus() -> dict[str, bytes]:
    files = mutants()
    assert len(files) > 250
    return files


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert "Traceback" not in caplog.text
    for r in caplog.records:
        assert r.exc_info is None, (r.name, r.getMessage())
        if r.name.startswith("siamkit"):
            assert "\n" not in r.getMessage() and len(r.getMessage()) < 400, r.getMessage()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: the tiny model's forward pass takes 1 ms, where two threads on a
    busy machine wait on each other for 100s of ms (this tests decoding, not the model)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A small untrained image model (28 x 28 grayscale): decoding does not care."""
    from siamkit.builders import build_model
    from siamkit.checkpoint import save_model
    from siamkit.config import Config

    config = Config()
    config.data.size = SIZE
    config.model.encoder_args = {"width": 8, "embedding_dim": 16}
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("fuzz") / "model"
    save_model(out, build_model(config.model, 1, SIZE), config,
               {"input": {"channels": 1, "size": SIZE, "invert": True, "keep_aspect": False}})
    return out


def test_mutated_uploads_get_a_4xx_naming_them_never_a_5xx(corpus, model_dir, tmp_path,
                                                            caplog):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from siamkit.serve import ServeSettings, create_app

    app = create_app(model_dir, tmp_path / "gallery", ServeSettings(no_auth=True))
    client = TestClient(app, raise_server_exceptions=False)
    statuses: dict[int, int] = {}
    with caplog.at_level(logging.DEBUG):
        for name, data in corpus.items():
            r = client.post("/embed", files=[("files", (name, data, "image/png"))])
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            assert r.status_code < 500, (name, r.status_code, r.text)
            if r.status_code != 200:
                assert 400 <= r.status_code < 500, (name, r.text)
                assert name in r.json()["error"], (name, r.json())
        names = sorted(corpus)[:: len(corpus) // 12][:12]  # several files in one request
        r = client.post("/identify", files=[("files", (n, corpus[n], "image/png"))
                                            for n in names])
        assert r.status_code == 400 and any(n in r.json()["error"] for n in names), r.text
    assert statuses.get(200, 0) > 30 and statuses.get(400, 0) > 200, statuses  # both kinds
    refused = client.post("/embed", files=[("files", ("q.png", corpus["orig_qoi.png"]))])
    assert "format QOI is not accepted (accepted: PNG, JPEG" in refused.json()["error"]
    _no_tracebacks(caplog)


def test_an_image_format_outside_the_service_settings_is_refused(model_dir, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from siamkit.serve import ServeSettings, create_app

    png, qoi = originals()["png_l.png"], originals()["qoi.png"]
    only_qoi = ServeSettings(no_auth=True, image_formats=("QOI",))
    client = TestClient(create_app(model_dir, tmp_path / "g1", only_qoi))
    assert client.post("/embed", files=[("files", ("a.qoi", qoi))]).status_code == 200
    r = client.post("/embed", files=[("files", ("b.png", png))])
    assert r.status_code == 400
    assert r.json()["error"] == "b.png: format PNG is not accepted (accepted: QOI)"
    with pytest.raises(ValueError, match="'HEIF' is not one Pillow opens"):
        create_app(model_dir, tmp_path / "g2", ServeSettings(no_auth=True,
                                                             image_formats=("PNG", "HEIF")))


def test_mutated_files_through_the_library_path_name_the_file(corpus, tmp_path, caplog,
                                                              monkeypatch):
    monkeypatch.setenv("SIAMKIT_DATA", str(tmp_path / "cache"))
    root = tmp_path / "mutants"
    paths = []
    for i, (name, data) in enumerate(sorted(corpus.items())):
        path = root / f"class{i % 5}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths.append(path)
    adapter = ImageInput(InputSpec(size=SIZE))
    readable, failed = [], 0
    with caplog.at_level(logging.DEBUG):
        for path in paths:
            try:
                x = adapter.prepare([str(path)])
            except DatasetError as exc:
                assert str(exc).startswith(f"{path}: "), str(exc)
                assert "\n" not in str(exc)
                failed += 1
            else:
                assert x.shape == (1, 1, SIZE, SIZE) and x.dtype == torch.uint8
                readable.append(path)
        with pytest.raises(DatasetError) as info:
            load_image_folder(root, size=SIZE, use_cache=False)
        assert any(str(info.value).startswith(f"{p}: ") for p in paths), str(info.value)
        with pytest.raises(DatasetError) as info:
            adapter.load_dataset(str(root), use_cache=False)
        assert any(str(info.value).startswith(f"{p}: ") for p in paths), str(info.value)
    assert failed > 200 and len(readable) > 30, (failed, len(readable))
    _no_tracebacks(caplog)
    for path in set(paths) - set(readable):
        path.unlink()
    assert len(load_image_folder(root, size=SIZE, use_cache=False)) == len(readable)
