"""The HTTP service, started as a real server on loopback and tested with real requests."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import sys
import tempfile
import threading
import time
import unicodedata
from pathlib import Path

import pytest

from conftest import make_text_run
from serving import start_server

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

ROOT = Path(__file__).resolve().parents[1]
MIRROR = ROOT.parent / "shared" / "datasets"
KEY, ADMIN = "test-key-123", "admin-key-456"


@pytest.fixture(scope="module")
def alphabets(tmp_path_factory) -> Path:
    if not (MIRROR / "omniglot").is_dir():
        pytest.skip("Omniglot mirror not present")
    os.environ.setdefault("SIAMKIT_MIRROR", str(MIRROR))
    from siamkit.data import omniglot_folder

    src = omniglot_folder("images_background")
    root = tmp_path_factory.mktemp("alphabets")
    for name in sorted(p.name for p in src.iterdir() if p.is_dir())[:5]:
        (root / name).symlink_to(src / name, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, alphabets) -> Path:
    """A model trained on the first four alphabets only: the fifth stays unseen."""
    from siamkit.config import load_config
    from siamkit.training import train

    seen = tmp_path_factory.mktemp("seen")
    for a in sorted(alphabets.iterdir())[:4]:
        (seen / a.name).symlink_to(a.resolve(), target_is_directory=True)
    cfg = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    cfg.write_text(
        "data: {dataset: folder, root: %s, group_depth: 1, invert: true, val_groups: 1,"
        " size: 28}\n"
        "model: {encoder_args: {width: 16}}\n"
        "optim: {steps: 150, p: 16, k: 3, warmup_steps: 10}\n"
        "eval: {every: 150, episodes: 20, way: 5}\n".replace("%s", str(seen)))
    out = tmp_path_factory.mktemp("serve") / "run"
    train(load_config(cfg), out)
    return out


class Server:
    def __init__(self, model: Path, gallery: Path, *extra: str) -> None:
        env = {**os.environ, "SIAMKIT_API_KEY": KEY, "SIAMKIT_ADMIN_KEY": ADMIN}
        # the log beside the gallery, in the test's own temporary folder (pytest removes it)
        Path(gallery).parent.mkdir(parents=True, exist_ok=True)
        self.log = Path(tempfile.mkdtemp(dir=Path(gallery).parent, prefix="log-")) / "serve.log"
        self.proc, self.url = start_server(
            [sys.executable, "-m", "siamkit.cli", "serve", "--model", str(model), "--gallery",
             str(gallery), *extra], self.log, env)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(20)


def _images(alphabets: Path, alphabet: int = 0):
    root = sorted(alphabets.iterdir())[alphabet]
    return {c.name: sorted(c.iterdir()) for c in sorted(root.iterdir()) if c.is_dir()}


def _files(paths, field="files"):
    return [(field, (p.name, p.read_bytes(), "image/png")) for p in paths]


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    srv = Server(model_dir, tmp_path_factory.mktemp("gal") / "g", "--max-body-mb", "2")
    yield srv
    srv.stop()


H = {"X-API-Key": KEY}
A = {"X-API-Key": ADMIN}


def test_every_endpoint(server, alphabets):
    imgs = _images(alphabets)
    names = list(imgs)
    c = httpx.Client(base_url=server.url, timeout=30)
    assert c.get("/health").json()["status"] == "ok"
    r = c.post("/embed", files=_files(imgs[names[0]][:2]), headers=H)
    assert r.status_code == 200 and len(r.json()["embeddings"]) == 2
    assert len(r.json()["embeddings"][0]) == r.json()["dim"]
    r = c.post("/verify", files=_files([imgs[names[0]][0]], "a") + _files([imgs[names[0]][0]],
                                                                          "b"), headers=H)
    v = r.json()
    assert r.status_code == 200 and v["score"] == pytest.approx(0, abs=1e-4)
    assert v["same"] is True and v["threshold"] is not None
    r = c.post("/enroll", data={"label": "alpha"}, files=_files(imgs[names[0]][:2]), headers=A)
    assert r.status_code == 200 and r.json() == {"label": "alpha", "added": 2, "references": 2}
    c.post("/enroll", data={"label": "beta"}, files=_files(imgs[names[1]][:1]), headers=A)
    assert c.get("/classes", headers=H).json()["classes"] == {"alpha": 2, "beta": 1}
    r = c.post("/identify?k=2", files=_files([imgs[names[0]][0], imgs[names[1]][0]]), headers=H)
    res = r.json()["results"]
    assert [x["matches"][0]["label"] for x in res] == ["alpha", "beta"]
    assert res[0]["decision"] == "alpha" and len(res[0]["matches"]) == 2
    assert c.delete("/classes/beta", headers=A).json() == {"label": "beta", "removed": 1}
    assert c.get("/classes", headers=H).json()["classes"] == {"alpha": 2}
    assert c.get("/openapi.json", headers=H).json()["paths"].keys() >= {
        "/embed", "/verify", "/identify", "/enroll", "/classes/{label}", "/classes", "/health"}


def test_keys(server, alphabets):
    img = _files(_images(alphabets)[next(iter(_images(alphabets)))][:1])
    c = httpx.Client(base_url=server.url, timeout=30)
    assert c.get("/classes").status_code == 401
    assert "missing API key" in c.get("/classes").json()["error"]
    assert c.get("/classes", headers={"X-API-Key": "nope"}).status_code == 403
    assert c.post("/identify", files=img).status_code == 401
    # enrolling and deleting need the admin key; the plain key is not enough
    r = c.post("/enroll", data={"label": "x"}, files=img, headers=H)
    assert r.status_code == 403 and "admin" in r.json()["error"]
    assert c.delete("/classes/x", headers=H).status_code == 403
    assert c.get("/health").status_code == 200


def test_the_admin_key_may_do_everything_the_api_key_may(server, alphabets):
    img = _files(_images(alphabets)[next(iter(_images(alphabets)))][:1])
    c = httpx.Client(base_url=server.url, timeout=30)
    assert c.get("/classes", headers=A).status_code == 200  # was 403
    assert c.post("/identify", files=img, headers=A).status_code == 200
    assert c.post("/embed", files=img, headers=A).status_code == 200
    # and the API key still may not write
    assert c.post("/enroll", data={"label": "x"}, files=img, headers=H).status_code == 403
    assert c.delete("/classes", params={"label": "x"}, headers=H).status_code == 403


def test_a_taken_port_is_a_clear_error_before_the_model_loads(tmp_path, monkeypatch):
    import socket

    from siamkit.serve import listen_socket, run

    monkeypatch.setenv("SIAMKIT_API_KEY", KEY)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ValueError, match=f"cannot listen on 127.0.0.1 port {port}: "
                                             f"Address already in use"):
            run(str(tmp_path / "no-such-model"), str(tmp_path / "g"), port=port)
    assert not (tmp_path / "g").exists()
    with listen_socket("127.0.0.1", 0) as free:  # 0: the system's choice, listening at once
        port = free.getsockname()[1]
        with pytest.raises(ValueError, match=f"cannot listen on 127.0.0.1 port {port}"):
            listen_socket("127.0.0.1", port)  # a second server started beside it


def test_the_logged_url_brackets_ipv6_and_escapes_its_zone():
    from siamkit.serve import _url_host

    assert _url_host("127.0.0.1") == "127.0.0.1"
    assert _url_host("::1") == "[::1]"
    assert _url_host("fe80::1%eth0") == "[fe80::1%25eth0]"  # RFC 6874


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_no_auth_only_on_loopback_and_never_without_the_admin_key(model_dir, alphabets,
                                                                  tmp_path, monkeypatch):
    import uvicorn
    from starlette.testclient import TestClient

    from siamkit.serve import ServeSettings, create_app, run

    for host in ("0.0.0.0", "::", "192.168.1.10", "10.0.0.1", "example.org"):
        with pytest.raises(ValueError, match=f"--no-auth with --host {host}: a service "
                                             f"without a key must listen on this machine"):
            run(str(model_dir), str(tmp_path / "g"), host=host, no_auth=True)
    assert not (tmp_path / "g").exists()  # refused before anything was made
    with pytest.raises(ValueError, match="no API key"):  # the library refuses it too
        create_app(model_dir, tmp_path / "g")
    with pytest.raises(ValueError, match="api_key is empty"):
        create_app(model_dir, tmp_path / "g", ServeSettings(api_key=" "))
    started, sockets_seen = [], []

    def serve(self, sockets):  # Ctrl+C in the running server
        started.append(sockets[0].getsockname()[0])
        sockets_seen.append(sockets[0])
        raise KeyboardInterrupt

    monkeypatch.setattr(uvicorn.Server, "run", serve)
    monkeypatch.delenv("SIAMKIT_API_KEY", raising=False)
    hosts = ["127.0.0.2"] + (["::1"] if _ipv6_loopback() else [])  # loopback: allowed
    for host in hosts:  # and Ctrl+C ends run() cleanly, its socket closed
        assert run(str(model_dir), str(tmp_path / "g"), host=host, port=0, no_auth=True) is None
    assert started == hosts and all(sock.fileno() == -1 for sock in sockets_seen)
    # without an API key reads are open, but a configured admin key still guards writes
    img = _files(_images(alphabets)[next(iter(_images(alphabets)))][:1])
    app = create_app(model_dir, tmp_path / "g", ServeSettings(admin_key=ADMIN, no_auth=True))
    with TestClient(app) as c:
        assert c.get("/classes").status_code == 200
        assert c.post("/identify", files=img).status_code == 200
        assert c.post("/enroll", data={"label": "x"}, files=img).status_code == 401
        r = c.post("/enroll", data={"label": "x"}, files=img, headers=H)
        assert r.status_code == 403 and "admin" in r.json()["error"]
        assert c.post("/enroll", data={"label": "x"}, files=img, headers=A).status_code == 200
        assert c.delete("/classes/x").status_code == 401
        assert c.delete("/classes", params={"label": "x"}, headers=A).json()["removed"] == 1


def _png(size=(20, 20), mode="L") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


def test_bad_input_gets_4xx_and_changes_nothing(server, alphabets):
    c = httpx.Client(base_url=server.url, timeout=60)
    before = c.get("/classes", headers=H).json()
    good = _png()
    bomb = _png((12000, 12000), "1")  # 144 M pixels, a few kB compressed
    cases = [
        ("non-image", {"files": [("files", ("x.png", b"hello, not an image", "image/png"))]},
         400, "not a readable image"),
        ("truncated", {"files": [("files", ("t.png", good[: len(good) // 2], "image/png"))]},
         400, "t.png"),
        ("empty", {"files": [("files", ("e.png", b"", "image/png"))]}, 400, "empty"),
        ("bomb", {"files": [("files", ("b.png", bomb, "image/png"))]}, 400, "over the limits"),
        ("absurd", {"files": [("files", ("w.png", _png((20000, 1)), "image/png"))]}, 400,
         "over the limits"),
        ("no files", {"data": {"label": "z"}}, 400, "files"),
    ]
    for name, kw, status, needle in cases:
        for path in ("/identify", "/embed"):
            r = c.post(path, headers=H, **kw)
            assert r.status_code == status, (name, path, r.text)
            assert needle in r.json()["error"], (name, path, r.json())
        r = c.post("/enroll", headers=A, data={"label": "bad"},
                   **{k: v for k, v in kw.items() if k != "data"})
        assert r.status_code == status, (name, r.text)
    for label in ("", "unknown", "x" * 300):
        r = c.post("/enroll", headers=A, data={"label": label},
                   files=[("files", ("g.png", good, "image/png"))])
        assert r.status_code == 400 and "error" in r.json(), label
    r = c.post("/embed", headers={**H, "Content-Type": "application/json"}, content=b"{nope")
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]
    r = c.post("/embed", headers=H, json={"texts": ["hello"]})
    assert r.status_code == 415 and "images" in r.json()["error"]
    for payload, status, needle in [({"texts": [""]}, 400, "empty"), ({"texts": []}, 400, "1 to"),
                                    ({"texts": ["x" * 20000]}, 413, "characters"),
                                    ({"text": "x"}, 400, "expected"), ([1, 2], 400, "expected")]:
        r = c.post("/embed", headers=H, json=payload)
        assert r.status_code == status and needle in r.json()["error"], payload
    r = c.post("/embed", headers=H, files=[("files", ("big.png", b"0" * (3 * 2**20),
                                                      "image/png"))])
    assert r.status_code == 413 and "over" in r.json()["error"]
    assert c.post("/identify?k=0", headers=H, files=[("files", ("g.png", good))]
                  ).status_code == 400
    assert c.post("/identify?k=abc", headers=H, files=[("files", ("g.png", good))]
                  ).status_code == 400
    r = c.delete("/classes/no-such-class", headers=A)
    assert r.status_code == 404 and "no-such-class" in r.json()["error"]
    assert c.get("/classes", headers=H).json() == before
    assert c.get("/health").status_code == 200


def test_any_label_that_can_be_enrolled_can_be_removed(server, alphabets):
    img = _files(_images(alphabets)[next(iter(_images(alphabets)))][:1])
    c = httpx.Client(base_url=server.url, timeout=30)
    before = c.get("/classes", headers=H).json()["classes"]
    labels = ["a/b", "../../etc/passwd", "\u00e9t\u00e9 \U0001f600", "Nan\u0303du\u0301",
              "100%", "a?b#c&d=e", "x+y z", "/"]
    stored = [unicodedata.normalize("NFC", lab) for lab in labels]
    for label, name in zip(labels, stored, strict=True):
        r = c.post("/enroll", data={"label": label}, files=img, headers=A)
        assert r.status_code == 200 and r.json()["label"] == name, (label, r.text)
    assert set(stored) <= set(c.get("/classes", headers=H).json()["classes"])
    # the path form cannot carry a '/': a 404, and the class stays
    assert c.delete("/classes/a%2Fb", headers=A).status_code == 404
    assert "a/b" in c.get("/classes", headers=H).json()["classes"]
    for label in labels:  # the query form takes any label, as given (NFD too)
        r = c.delete("/classes", params={"label": label}, headers=A)
        assert r.status_code == 200 and r.json() == {"label": label, "removed": 1}, label
    assert c.get("/classes", headers=H).json()["classes"] == before
    # the one label rule, for enrolling and removing alike
    for bad, why in (("s\u200b5", "U+200B"), ("del\x7f", "U+007F"), ("nel\x85", "U+0085"),
                     ("a\u202eb", "U+202E")):
        r = c.post("/enroll", data={"label": bad}, files=img, headers=A)
        assert r.status_code == 400 and why in r.json()["error"], (bad, r.text)
        r = c.delete("/classes", params={"label": bad}, headers=A)
        assert r.status_code == 400 and why in r.json()["error"], (bad, r.text)
    r = c.delete("/classes", params={"label": "no such class"}, headers=A)
    assert r.status_code == 404 and "no such class" in r.json()["error"]
    assert c.delete("/classes", headers=A).status_code == 400  # no label given
    assert c.delete("/classes", params={"label": "x"}, headers=H).status_code == 403
    assert c.get("/classes", headers=H).json()["classes"] == before


def test_a_retried_enroll_with_its_idempotency_key_is_added_once(server, alphabets):
    paths = next(iter(_images(alphabets).values()))[:2]
    c = httpx.Client(base_url=server.url, timeout=30)
    keyed = {**A, "Idempotency-Key": "enroll-idem-1"}
    first = c.post("/enroll", data={"label": "idem"}, files=_files(paths), headers=keyed)
    assert first.status_code == 200, first.text
    assert first.json() == {"label": "idem", "added": 2, "references": 2}
    assert "idempotent-replayed" not in first.headers
    # the answer was lost; the client sends the same request again
    again = c.post("/enroll", data={"label": "idem"}, files=_files(paths), headers=keyed)
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert c.get("/classes", headers=H).json()["classes"]["idem"] == 2
    r = c.post("/enroll", data={"label": "other"}, files=_files(paths), headers=keyed)
    assert r.status_code == 409 and "enroll-idem-1" in r.json()["error"]
    r = c.post("/enroll", data={"label": "idem"}, files=_files(paths),
               headers={**A, "Idempotency-Key": "k" * 300})
    assert r.status_code == 400 and "idempotency key" in r.json()["error"]
    classes = c.get("/classes", headers=H).json()["classes"]
    assert classes["idem"] == 2 and "other" not in classes
    assert c.delete("/classes/idem", headers=A).json()["removed"] == 2


def test_smaller_bad_inputs_get_the_promised_4xx(server, alphabets):
    c = httpx.Client(base_url=server.url, timeout=60)
    before = c.get("/classes", headers=H).json()
    json_h = {**H, "content-type": "application/json"}
    r = c.post("/embed", headers=json_h, content=b"[" * 10**6)  # was a 500 (RecursionError)
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]

    def chunks(head: bytes, total: int):  # no Content-Length: Transfer-Encoding: chunked
        yield head
        for _ in range(total // 2**16):
            yield b"0" * 2**16

    head = (b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n")
    form_h = {"content-type": "multipart/form-data; boundary=b"}
    for path, key in (("/embed", H), ("/identify", H), ("/enroll", A)):  # 2 MB limit
        r = c.post(path, headers={**key, **form_h}, content=chunks(head, 2**21 + 2**18))
        assert r.status_code == 413 and "over" in r.json()["error"], (path, r.text)
    r = c.post("/embed", headers=json_h, content=chunks(b'{"texts": ["', 2**21 + 2**18))
    assert r.status_code == 413, r.text
    # JSON to an image model: 415, as documented (was a 400 about missing form fields)
    for path, key, body in (("/identify", H, {"texts": ["a"]}),
                            ("/verify", H, {"a": "x", "b": "y"}),
                            ("/enroll", A, {"label": "x", "texts": ["a"]}),
                            ("/identify", H, [[[[]]]])):
        r = c.post(path, headers=key, json=body)
        assert r.status_code == 415 and "multipart" in r.json()["error"], (path, r.text)
    r = c.post("/identify", headers={**H, "content-type": "text/plain"}, content=b"hello")
    assert r.status_code == 415
    # error texts never carry a repr with a memory address
    r = c.post("/identify", headers=H, files=[("files", ("x.png", b"not an image", "image/png"))])
    assert r.status_code == 400 and "not a readable image" in r.json()["error"]
    assert " at 0x" not in r.text and "BytesIO" not in r.text, r.text
    assert c.get("/classes", headers=H).json() == before
    assert c.get("/health").status_code == 200


def test_concurrent_enroll_and_identify_lose_nothing(server, alphabets):
    imgs = _images(alphabets, 1)
    paths = [p for v in imgs.values() for p in v[:1]]
    acked, errors = [], []

    def enroller(t: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for i in range(6):
                label = f"conc-{t}-{i}"
                r = c.post("/enroll", data={"label": label},
                           files=_files([paths[(t * 6 + i) % len(paths)]]), headers=A)
                if r.status_code == 200:
                    acked.append(label)
                else:
                    errors.append(r.text)

    def identifier() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for _ in range(6):
                r = c.post("/identify", files=_files(paths[:2]), headers=H)
                if r.status_code != 200:
                    errors.append(r.text)

    threads = [threading.Thread(target=enroller, args=(t,)) for t in range(3)]
    threads += [threading.Thread(target=identifier) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    present = httpx.get(server.url + "/classes", headers=H).json()["classes"]
    assert len(acked) == 18 and all(present.get(lab) == 1 for lab in acked)


def test_sigkill_during_enrolls_keeps_every_acknowledged_one(model_dir, alphabets, tmp_path):
    gallery = tmp_path / "crash"
    srv = Server(model_dir, gallery)
    img = _files([next(iter(_images(alphabets).values()))[0]])
    acked: list[str] = []
    stop = threading.Event()

    def stream() -> None:
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            for i in range(10_000):
                if stop.is_set():
                    return
                try:
                    r = c.post("/enroll", data={"label": f"k{i}"}, files=img, headers=A)
                except httpx.HTTPError:
                    return  # the server died mid-request: not acknowledged
                if r.status_code == 200:
                    acked.append(f"k{i}")

    t = threading.Thread(target=stream)
    t.start()
    while len(acked) < 15 and t.is_alive():
        time.sleep(0.05)
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(10)
    stop.set()
    t.join(30)
    assert len(acked) >= 15
    again = Server(model_dir, gallery)
    try:
        present = httpx.get(again.url + "/classes", headers=H, timeout=10).json()["classes"]
        assert set(acked) <= set(present)
        r = httpx.post(again.url + "/identify", files=img, headers=H, timeout=10)
        assert r.status_code == 200 and r.json()["results"][0]["matches"]
    finally:
        again.stop()


def test_serve_recreates_an_empty_gallery_left_by_an_interrupted_create(model_dir, alphabets,
                                                                       tmp_path):
    gallery = tmp_path / "g"
    gallery.mkdir()
    (gallery / "gallery.sqlite").write_bytes(b"")  # an older version killed in create
    srv = Server(model_dir, gallery)  # used to fail: no such table: meta
    try:
        img = _files([next(iter(_images(alphabets).values()))[0]])
        r = httpx.post(srv.url + "/enroll", data={"label": "x"}, files=img, headers=A)
        assert r.status_code == 200 and r.json()["added"] == 1
    finally:
        srv.stop()
    assert "creating the gallery anew" in srv.log.read_text()


def test_idempotency_keys_survive_a_restart(model_dir, alphabets, tmp_path):
    img = _files([next(iter(_images(alphabets).values()))[0]])
    keyed = {**A, "Idempotency-Key": "before-the-crash"}
    srv = Server(model_dir, tmp_path / "g")
    try:
        r = httpx.post(srv.url + "/enroll", data={"label": "x"}, files=img, headers=keyed)
        assert r.status_code == 200 and r.json()["added"] == 1
    finally:
        srv.stop(signal.SIGKILL)
    again = Server(model_dir, tmp_path / "g")
    try:
        r = httpx.post(again.url + "/enroll", data={"label": "x"}, files=img, headers=keyed)
        assert r.status_code == 200 and r.headers["Idempotent-Replayed"] == "true"
        assert r.json() == {"label": "x", "added": 1, "references": 1}
    finally:
        again.stop()


def test_the_service_refuses_a_gallery_that_does_not_fit_its_model(model_dir, tmp_path):
    import numpy as np

    from siamkit.gallery import Gallery, GalleryError, metric_of
    from siamkit.inference import Embedder
    from siamkit.serve import ServeSettings, create_app

    model = Embedder(model_dir)
    settings = ServeSettings(api_key=KEY)
    Gallery.create(tmp_path / "small", 3, metric=metric_of(model.model)).close()  # no model id
    with pytest.raises(GalleryError, match=f"size 3, this model makes embeddings of size "
                                           f"{model.dim}"):
        create_app(model_dir, tmp_path / "small", settings)
    other = "dot" if metric_of(model.model) != "dot" else "cosine"
    Gallery.create(tmp_path / "metric", model.dim, metric=other).close()
    with pytest.raises(GalleryError, match=f"a {other} gallery, this model scores with "
                                           f"{metric_of(model.model)}"):
        create_app(model_dir, tmp_path / "metric", settings)
    g = Gallery.create(tmp_path / "nan", model.dim, metric=metric_of(model.model),
                       model_id=model.model_id)
    g.close()
    con = sqlite3.connect(tmp_path / "nan" / "gallery.sqlite")
    con.execute("INSERT INTO refs (label, embedding) VALUES ('ghost', ?)",
                (np.full(model.dim, np.nan, np.float32).tobytes(),))
    con.commit()
    con.close()
    with pytest.raises(GalleryError, match="not finite.*class 'ghost'"):  # was: unknown (nan)
        create_app(model_dir, tmp_path / "nan", settings)


def test_one_shot_identification_of_held_out_omniglot_characters(server, alphabets):
    imgs = _images(alphabets, 4)  # an alphabet the model never saw
    c = httpx.Client(base_url=server.url, timeout=60)
    for name, paths in imgs.items():
        assert c.post("/enroll", data={"label": f"oneshot/{name}"}, files=_files(paths[:1]),
                      headers=A).status_code == 200
    hits = total = 0
    for name, paths in imgs.items():
        r = c.post("/identify?k=1", files=_files(paths[1:6]), headers=H)
        assert r.status_code == 200
        top = [x["matches"][0]["label"] for x in r.json()["results"]]
        hits += sum(t == f"oneshot/{name}" for t in top)
        total += len(top)
    n = len(imgs)
    print(f"one-shot rank-1 {hits}/{total} over {n} unseen classes")
    assert hits / total > 5 / n  # a 150-step model, far above the 1/n of chance


def test_text_model_serves_json(tmp_path, alphabets):
    if not (MIRROR / "mrpc").is_dir():
        pytest.skip("MRPC mirror absent")
    import numpy as np

    from siamkit.data.textpairs import load_mrpc

    run = make_text_run(tmp_path / "run", threshold=0.7)
    mrpc = load_mrpc("test", MIRROR)
    pos = np.flatnonzero(mrpc.same)[:6]
    pairs = [(mrpc.texts[mrpc.left[k]], mrpc.texts[mrpc.right[k]]) for k in pos]
    srv = Server(run, tmp_path / "gal")
    try:
        c = httpx.Client(base_url=srv.url, timeout=60)
        r = c.post("/embed", headers=H, json={"texts": [pairs[0][0], pairs[0][1]]})
        assert r.status_code == 200 and r.json()["dim"] == 384
        a, b = (np.array(e) for e in r.json()["embeddings"])
        r = c.post("/verify", headers=H, json={"a": pairs[0][0], "b": pairs[0][1]})
        v = r.json()
        cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        assert r.status_code == 200 and v["score"] == pytest.approx(cos, abs=1e-4)
        assert v["same"] == (cos >= 0.7) and v["threshold"] == 0.7
        for n, (first, _) in enumerate(pairs):  # one reference text per class
            r = c.post("/enroll", headers=A, json={"label": f"story{n}", "texts": [first]})
            assert r.status_code == 200 and r.json()["added"] == 1
        r = c.post("/identify?k=2", headers=H, json={"texts": [p[1] for p in pairs]})
        assert r.status_code == 200
        top = [res["matches"][0]["label"] for res in r.json()["results"]]
        assert sum(t == f"story{n}" for n, t in enumerate(top)) >= 5  # paraphrases match
        assert r.json()["results"][0]["text"] == pairs[0][1]
        # the wrong kind of input, and bad texts
        png = next(iter(_images(alphabets).values()))[0]
        r = c.post("/embed", headers=H, files=_files([png]))
        assert r.status_code == 415 and "texts" in r.json()["error"]
        r = c.post("/verify", headers=H, files=_files([png], "a") + _files([png], "b"))
        assert r.status_code == 400
        for body in ({"a": "", "b": "x"}, {"a": "x"}, {"a": "x" * 20000, "b": "y"}):
            r = c.post("/verify", headers=H, json=body)
            assert r.status_code in (400, 413) and "error" in r.json(), body
        r = c.post("/enroll", headers=A, json={"label": "", "texts": ["x"]})
        assert r.status_code == 400
        assert c.get("/classes", headers=H).json()["classes"] == {f"story{n}": 1
                                                                  for n in range(6)}
    finally:
        srv.stop()


def test_table_model_serves_json_rows(tmp_path):
    """An MLP twin trained on a class-labelled table answers rows as JSON objects: embed,
    verify, enroll a class from one row, identify; bad rows get a 4xx and change nothing."""
    import numpy as np
    import yaml

    from siamkit.data.tabular import load_digits

    d = load_digits()
    pixels = [f"p{i}" for i in range(64)]
    rows = [{**{p: float(v) for p, v in zip(pixels, x.tolist(), strict=True)},
             "digit": d.class_names[int(y)]} for x, y in zip(d.images, d.labels, strict=True)]
    table = tmp_path / "digits.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = yaml.safe_load((ROOT / "configs" / "digits.yaml").read_text())
    config["data"] = {"dataset": "table", "root": str(table), "label_column": "digit",
                      "split_file": str(ROOT / "configs/splits/digits.json")}
    config["optim"]["steps"] = 60
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(config))
    from siamkit.cli import main

    assert main(["--quiet", "train", "--config", str(tmp_path / "t.yaml"), "--out",
                 str(tmp_path / "run"), "--no-progress"]) == 0
    srv = Server(tmp_path / "run", tmp_path / "gal")
    try:
        c = httpx.Client(base_url=srv.url, timeout=60)
        fives = [r for r in rows if r["digit"] == "5"][:2]
        sixes = [r for r in rows if r["digit"] == "6"][:2]
        r = c.post("/embed", headers=H, json={"rows": [fives[0], sixes[0]]})
        assert r.status_code == 200 and len(r.json()["embeddings"]) == 2
        a, b = (np.array(e) for e in r.json()["embeddings"])
        v = c.post("/verify", headers=H, json={"a": fives[0], "b": sixes[0]}).json()
        assert v["score"] == pytest.approx(float(np.linalg.norm(a - b)), rel=1e-4, abs=1e-4)
        for label, ref in (("five", fives[0]), ("six", sixes[0])):  # one row a class
            r = c.post("/enroll", headers=A, json={"label": label, "rows": [ref]})
            assert r.status_code == 200 and r.json()["added"] == 1
        r = c.post("/identify?k=1", headers=H, json={"rows": [fives[0], sixes[0]]})
        res = r.json()["results"]
        assert [x["matches"][0]["label"] for x in res] == ["five", "six"]
        assert res[0]["row"] == 0 and res[0]["matches"][0]["score"] == pytest.approx(0, abs=1e-4)
        # bad rows: unknown column, no column, not an object, none, too many; images
        for body, why in (({"rows": [{"nope": 1}]}, "row 0: column 'nope'"),
                          ({"rows": [{}]}, "no column"), ({"rows": []}, "1 to"),
                          ({"rows": ["p0"]}, "object"), ({"texts": ["x"]}, "rows"),
                          ({"rows": [{"p0": 1}] * 70}, "1 to"),
                          ({"rows": [{"p0": {"a": 1}}]}, "holds a dict")):
            r = c.post("/embed", headers=H, json=body)
            assert r.status_code in (400, 415) and why in r.json()["error"], (body, r.json())
        huge = '{"rows": [{"p0": ' + "9" * 5000 + "}]}"  # past Python's int-parsing limit
        for path in ("/embed", "/identify"):
            r = c.post(path, headers={**H, "content-type": "application/json"}, content=huge)
            assert r.status_code == 400 and "error" in r.json(), path
        r = c.post("/verify", headers=H, json={"a": {**fives[0], "p1": "1e400"}, "b": fives[0]})
        assert r.status_code == 200 and np.isfinite(r.json()["score"])  # 1e400: missing
        r = c.post("/enroll", headers=A, json={"label": "bad", "rows": [{"p0": 1, "x": 2}]})
        assert r.status_code == 400 and "'x'" in r.json()["error"]
        r = c.post("/verify", headers=H, json={"a": fives[0]})
        assert r.status_code == 400
        r = c.post("/embed", headers=H, files=[("files", ("a.png", _png(), "image/png"))])
        assert r.status_code == 415 and "rows" in r.json()["error"]
        keyed = {**A, "Idempotency-Key": "rows-1"}  # JSON enrolls take the key too
        for _ in range(2):
            r = c.post("/enroll", headers=keyed, json={"label": "seven", "rows": [fives[1]]})
            assert r.status_code == 200 and r.json()["references"] == 1
        assert r.headers["Idempotent-Replayed"] == "true"
        assert c.delete("/classes/seven", headers=A).json()["removed"] == 1
        assert c.get("/classes", headers=H).json()["classes"] == {"five": 1, "six": 1}
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def untrained_dir(tmp_path_factory) -> Path:
    """A small untrained 28 x 28 image model: enough for what the service does to uploads."""
    import torch

    from siamkit.builders import build_model
    from siamkit.checkpoint import save_model
    from siamkit.config import Config

    config = Config()
    config.data.size = 28
    config.model.encoder_args = {"width": 8, "embedding_dim": 16}
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("untrained") / "run"
    save_model(out, build_model(config.model, 1, 28), config,
               {"input": {"channels": 1, "size": 28, "invert": True, "keep_aspect": False}})
    return out


def test_the_service_refuses_images_over_its_pixel_limit_before_decoding(untrained_dir,
                                                                        tmp_path, monkeypatch):
    from fastapi.testclient import TestClient
    from PIL import ImageFile

    from siamkit.serve import ServeSettings, create_app

    assert ServeSettings().max_pixels == 4_000_000
    real_load = ImageFile.ImageFile.load

    def load(self):
        assert self.size[0] * self.size[1] <= 4_000_000, f"decoded a {self.size} image"
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    c = TestClient(create_app(untrained_dir, tmp_path / "g", ServeSettings(no_auth=True)))
    big, fine = _png((2001, 2000), "1"), _png((2000, 2000), "1")
    r = c.post("/embed", files=[("files", ("fine.png", fine)), ("files", ("big.png", big))])
    assert r.status_code == 400, r.text
    assert r.json()["error"] == ("big.png: 2001 x 2000 pixels is over the limits (4000000 "
                                 "pixels, 16384 a side); send a smaller image, or raise the "
                                 "limit")
    assert c.post("/embed", files=[("files", ("fine.png", fine))]).status_code == 200
    c = TestClient(create_app(untrained_dir, tmp_path / "g",
                              ServeSettings(no_auth=True, max_pixels=10**6)))
    r = c.post("/embed", files=[("files", ("fine.png", fine))])
    assert r.status_code == 400 and "fine.png: 2000 x 2000 pixels is over" in r.json()["error"]


def test_gallery_answers_carry_the_version_and_min_version_is_honoured(server, alphabets):
    """X-Gallery-Version on every gallery answer (a folder's gallery too); a read asking for
    a version this service has not reached is 503 with Retry-After, not a stale answer."""
    img = _files([next(iter(_images(alphabets).values()))[0]])
    c = httpx.Client(base_url=server.url, timeout=30)
    r = c.post("/enroll", data={"label": "versioned"}, files=img, headers=A)
    v = int(r.headers["X-Gallery-Version"])
    assert r.status_code == 200 and v >= 1
    r = c.post(f"/identify?k=1&min_version={v}", files=img, headers=H)
    assert r.status_code == 200 and int(r.headers["X-Gallery-Version"]) >= v
    r = c.get(f"/classes?min_version={v + 1000}", headers=H)
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    assert f"not yet {v + 1000}" in r.json()["error"]
    r = c.delete("/classes?label=versioned", headers=A)
    assert r.status_code == 200 and int(r.headers["X-Gallery-Version"]) > v
    health = c.get("/health")
    assert health.json()["version"] == int(health.headers["X-Gallery-Version"])
