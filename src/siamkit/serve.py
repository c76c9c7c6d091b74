"""HTTP service: embed, verify, identify, enroll and remove classes (FastAPI on uvicorn).

``siamkit serve --model RUN_DIR --gallery GALLERY_DIR`` listens on 127.0.0.1:8000 and
documents itself at ``/docs`` (OpenAPI). Every endpoint but ``/health`` needs the API key
in the ``X-API-Key`` header (from ``SIAMKIT_API_KEY`` or ``--api-key-file``); with an
admin key configured (``SIAMKIT_ADMIN_KEY`` / ``--admin-key-file``) enrolling and deleting
need that one instead, and the admin key may also do everything the API key may. Keys
are compared in constant time. ``--no-auth`` (no API key) is only allowed on a loopback
address, and a configured admin key still guards enrolling and deleting under it.

Image models take images as multipart files; text models take JSON (``/embed`` and
``/identify``: ``{"texts": [...]}``, ``/verify``: ``{"a": ..., "b": ...}``, ``/enroll``:
``{"label": ..., "texts": [...]}``), and MLP twins trained on a table or on records take
rows as JSON objects the same way (``{"rows": [{"column": value, ...}, ...]}``, ``/verify``:
``{"a": {...}, "b": {...}}``); each answers 415 to another kind.

Classes: a label follows the gallery's one rule (:func:`siamkit.gallery.check_label`:
stored in NFC, no control or invisible characters, at most 256 characters). ``DELETE
/classes/{label}`` removes a class with a simple label; ``DELETE /classes?label=...``
removes any label that can be enrolled (``a/b`` included).

Bad input gets a 4xx answer with a JSON ``{"error": ...}`` and changes nothing: unreadable
or truncated images, images over the pixel limit (checked from the header, before
decoding), bodies over the size limit (413, declared or chunked), too many files, bad
labels, unknown labels, malformed or too deeply nested JSON. Error texts never carry
object reprs or memory addresses.

Images: only the formats of ``ServeSettings.image_formats`` are opened (default PNG, JPEG,
BMP, TIFF, GIF, WebP, PGM/PPM/PBM; Pillow's other decoders never run), and only up to
``ServeSettings.max_pixels`` pixels (default 4 M), checked from the header before any
decoding; large images are decoded at a reduced size where the format allows (JPEG). An
upload of another format (400: "format X is not accepted (accepted: ...)"), over the pixel
limit (400: "W x H pixels is over the limits (...)"), or that cannot be decoded, whatever
the decoder raised (400: "not a readable image"), is answered with an error naming the
upload, and logs no traceback.

Enrolls are committed to the gallery's database before they are acknowledged, so a crash
never loses an acknowledged enroll. ``POST /enroll`` takes an ``Idempotency-Key`` header:
a retry with the same key (its answer lost) adds nothing and gets the first answer again,
marked ``Idempotent-Replayed: true``; the same key for another label is 409. Keys are
stored in the gallery database with the references, so they survive restarts.

Replicas: ``--gallery`` takes a folder (SQLite, one process) or a PostgreSQL URL
(``postgresql://USER@HOST/DATABASE``), which several replicas behind a load balancer share.
Each keeps its own search index and applies the others' changes as they commit (see
:mod:`siamkit.gallery.sync`; an enroll acknowledged by one replica is identified by the
others within one second, typically milliseconds). Every gallery answer (``/enroll``,
``/identify``, ``/classes``, ``DELETE``, ``/health``) carries ``X-Gallery-Version``: the
gallery version the replica had applied (after a write: including it). Read-your-writes
across replicas: pass that number as ``?min_version=N`` to ``/identify`` or ``/classes``;
a replica that has not reached it waits up to ``ServeSettings.max_version_wait`` seconds
(2 s), then answers 503 with ``Retry-After``. While the gallery's database is unreachable,
gallery requests answer 503 with ``{"error": ...}`` and ``Retry-After`` (never a 500,
never an answer from an index that may miss others' enrolls), and ``/health`` answers 503
``{"status": "unavailable"}``; ``/embed`` and ``/verify`` keep working.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from .config import ConfigError
from .data.images import DEFAULT_FORMATS

try:  # the serve extra; names at module level so FastAPI can resolve the annotations
    from fastapi import (
        Depends,
        FastAPI,
        File,
        Form,
        Header,
        HTTPException,
        Query,
        Request,
        Response,
        UploadFile,
    )
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile as FormFile
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as exc:  # pragma: no cover - depends on the optional extra
    raise ImportError("the HTTP service needs the serve extra: pip install "
                      "'siamkit[serve]'") from exc



class TextPair(BaseModel):
    """Two texts to verify (text models)."""

    a: str
    b: str


class Texts(BaseModel):
    """Texts to embed or identify (text models)."""

    texts: list[str]


class TextEnroll(BaseModel):
    """Reference texts of one class label (text models)."""

    label: str
    texts: list[str]


Value = str | int | float | bool | None


class RowPair(BaseModel):
    """Two rows ``{column: value}`` to verify (table and record models)."""

    a: dict[str, Value]
    b: dict[str, Value]


class Rows(BaseModel):
    """Rows to identify (table and record models)."""

    rows: list[dict[str, Value]]


class RowEnroll(BaseModel):
    """Reference rows of one class label (table and record models)."""

    label: str
    rows: list[dict[str, Value]]

__all__ = ["ServeSettings", "create_app", "listen_socket", "run"]

logger = logging.getLogger(__name__)


@dataclass
class ServeSettings:
    """Limits and keys of the service. Without ``api_key`` the service only starts with
    ``no_auth`` (and :func:`run` only on a loopback address); an ``admin_key`` is enforced
    for enrolling and deleting either way. ``image_formats`` are the image formats read
    (Pillow's names, or ``"png,jpg"``; see :func:`siamkit.data.images.check_formats`): an
    unknown name stops :func:`create_app`, an upload of another format gets a 400.

    ``max_pixels`` (default 4 M, e.g. 2000 x 2000) bounds the decoding cost of an upload:
    it is checked from the image's header, and an image over it gets a 400 naming it
    ("... pixels is over the limits"), like any other image the service cannot use (413
    stays for bodies and counts over their limits). A PNG costs about 10 ns of CPU a pixel
    to decode whatever the model reads, so a request of ``max_files`` PNGs at the limit
    costs about ``max_files x max_pixels x 10 ns`` (measured on a 2-core machine: 2.4 s at
    the defaults, 27 s at the library's 40 M); a JPEG is decoded at 1/2 to 1/8 of its size
    and costs far less. ``benchmarks/serve.py`` measures it."""

    api_key: str | None = None
    admin_key: str | None = None
    max_body_bytes: int = 32 * 2**20
    max_pixels: int = 4_000_000  # a model reading 28..224 pixels a side needs no more
    max_files: int = 64
    max_k: int = 100
    max_text_chars: int = 10_000
    no_auth: bool = False  # serve without an API key (a trusted local test)
    image_formats: tuple[str, ...] = DEFAULT_FORMATS
    # the longest a read with ?min_version=N waits for this replica to reach version N
    max_version_wait: float = 2.0
    # where the encoder runs (auto: ONNX Runtime when the onnx extra is installed) and the
    # torch engine's precision; None: $SIAMKIT_ENGINE / $SIAMKIT_PRECISION, else auto
    engine: str | None = None
    precision: str | None = None


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: answer 413 to bodies over ``limit`` bytes (declared or streamed).

    A streamed (chunked) body is counted as it is read; once over the limit the answer is
    413 whatever the application makes of the interrupted read (FastAPI's form parser
    calls it a 400). The rest of the body, up to another ``limit`` bytes, is read and
    dropped first, so that the client, still sending, gets the answer instead of a reset.
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        try:
            too_big = declared is not None and int(declared) > self.limit
        except ValueError:
            await _send_error(send, 400, "bad Content-Length header")
            return
        if too_big:
            await _send_error(send, 413, f"request body over {self.limit} bytes")
            return
        seen = 0
        over = ended = started = False

        async def limited() -> dict:
            nonlocal seen, over, ended
            if over:  # an application reading on after the overflow
                raise _TooLarge
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                ended = not message.get("more_body", False)
                if seen > self.limit:
                    over = True
                    raise _TooLarge
            else:
                ended = True
            return message

        async def refuse() -> None:
            nonlocal started, ended
            if started:
                return
            started = True
            dropped = 0
            while not ended and dropped <= self.limit:
                message = await receive()
                dropped += len(message.get("body", b""))
                ended = message["type"] != "http.request" or not message.get("more_body")
            await _send_error(send, 413, f"request body over {self.limit} bytes")

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if over:  # whatever the application answers to a body it could not read
                if message["type"] == "http.response.start":
                    await refuse()
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, guarded_send)
        except Exception:
            if not over:
                raise
        if over:
            await refuse()


class ApiKeyAuth:
    """ASGI middleware: the ``X-API-Key`` header must hold a key that may do the request,
    checked before anything of the request is read. ``/health`` is open.

    Enrolling (``POST /enroll``) and deleting (any ``DELETE``) need the admin key when one
    is set, else the API key; everything else takes the API key or the admin key (the
    admin key may do all the API key may). Without an API key (``no_auth``) everything but
    enrolling and deleting is open, and those still need the admin key if one is set.
    """

    def __init__(self, app: Any, api_key: str | None, admin_key: str | None = None) -> None:
        self.app, self.api_key, self.admin_key = app, api_key, admin_key

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") == "/health":
            await self.app(scope, receive, send)
            return
        writes = scope["method"] == "DELETE" or (scope["method"] == "POST"
                                                 and scope["path"] == "/enroll")
        if writes and self.admin_key is not None:
            accepted = [self.admin_key]
        elif self.api_key is None:  # no_auth: open, but for writes under an admin key
            await self.app(scope, receive, send)
            return
        else:
            accepted = [k for k in (self.api_key, self.admin_key) if k is not None]
        given = dict(scope.get("headers") or []).get(b"x-api-key")
        if given is None:
            await _send_error(send, 401, "missing API key (X-API-Key header)")
            return
        ok = False
        for key in accepted:  # every key compared, each in constant time
            ok |= hmac.compare_digest(given, key.encode())
        if not ok:
            admin = writes and self.admin_key is not None
            await _send_error(send, 403, "wrong API key" + (" (enrolling and deleting need the "
                                                             "admin key)" if admin else ""))
            return
        await self.app(scope, receive, send)


_ADDRESS = re.compile(r"\s*<[^<>]*\bat 0x[0-9a-fA-F]+>")


def _public(message: str) -> str:
    """An error text fit for a client: no ``<... object at 0x...>`` (a memory address, and
    noise), as some libraries put in their messages (PIL: 'cannot identify image file
    <_io.BytesIO object at 0x7f...>')."""
    return _ADDRESS.sub("", message)


async def _send_error(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": _public(message)}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(model_dir: str | Path, gallery_dir: str | Path,
               settings: ServeSettings | None = None) -> Any:
    """The FastAPI application serving one model and its gallery (``gallery_dir``: a
    folder, or a PostgreSQL URL shared with other replicas). Its shutdown closes the
    gallery (and stops following a shared one)."""
    from contextlib import asynccontextmanager

    from . import __version__
    from .data.download import DatasetError
    from .data.images import check_formats
    from .gallery import GalleryError, IdempotencyConflict, StoreUnavailable, check_label
    from .inference import Embedder, identify_results
    from .inputs import ImageInput

    s = settings or ServeSettings()
    for name, key in (("api_key", s.api_key), ("admin_key", s.admin_key)):
        if key is not None and not key.strip():
            raise ConfigError(f"{name} is empty: give a key, or None")
    if s.api_key is None and not s.no_auth:
        raise ConfigError("no API key: set ServeSettings.api_key (or no_auth=True for a "
                         "trusted local test)")
    formats = check_formats(s.image_formats)  # a bad name stops the start, not a request
    embedder = Embedder(model_dir, max_pixels=s.max_pixels, engine=s.engine,
                        precision=s.precision)
    if isinstance(embedder.adapter, ImageInput):  # the Embedder takes no formats itself
        embedder.adapter.formats = formats
    gallery = embedder.open_gallery(gallery_dir, create=True)

    @asynccontextmanager
    async def lifespan(_: Any) -> Any:
        yield
        gallery.close()

    app = FastAPI(title="siamkit", version=__version__, lifespan=lifespan,
                  description="Siamese-network verification and one-shot identification.")
    app.state.embedder, app.state.gallery = embedder, gallery

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": _public(str(exc.detail))}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(StoreUnavailable)
    async def store_down(_: Request, exc: StoreUnavailable) -> JSONResponse:
        return JSONResponse({"error": _public(str(exc))}, status_code=503,
                            headers={"Retry-After": "1"})

    def versioned(response: Response, version: int | None = None) -> None:
        """Mark ``response`` with the gallery version (now, or the one given)."""
        response.headers["X-Gallery-Version"] = str(gallery.version if version is None
                                                    else version)

    def reach(min_version: int | None) -> int:
        """Refuse (503) when the gallery's store is unreachable, or when this replica has
        not applied ``min_version`` within the wait bound; the version the answer
        includes."""
        gallery.check_current()
        if min_version is not None and not gallery.wait_for(min_version,
                                                            s.max_version_wait):
            raise HTTPException(
                503, f"this replica has applied gallery version {gallery.version}, not yet "
                     f"{min_version} (waited {s.max_version_wait:g} s): retry, or ask "
                     f"another replica", headers={"Retry-After": "1"})
        return gallery.version

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}"
                             for e in exc.errors()[:5])
        return JSONResponse({"error": _public(f"bad request: {problems}")}, status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error")
        return JSONResponse({"error": "internal error"}, status_code=500)

    def read_files(files: list[UploadFile]) -> list[Any]:
        if not files:
            raise HTTPException(400, "no files uploaded")
        if len(files) > s.max_files:
            raise HTTPException(413, f"{len(files)} files; at most {s.max_files} per request")
        try:
            return [embedder.load(f.file.read(), f.filename or f"file {i}")
                    for i, f in enumerate(files)]
        except DatasetError as exc:
            raise HTTPException(400, str(exc)) from None

    text_model = embedder.kind == "text"
    row_model = embedder.featurizer is not None

    def no_images() -> HTTPException:
        if row_model:
            return HTTPException(415, 'this model embeds rows of a table: send JSON '
                                      '{"rows": [{"column": value, ...}, ...]}')
        return HTTPException(415, 'this model embeds texts: send JSON {"texts": [...]}')

    def embed_rows(rows: Any) -> Any:
        if not isinstance(rows, list) or not rows or len(rows) > s.max_files:
            raise HTTPException(400, f"give 1 to {s.max_files} rows")
        try:
            return embedder.embed_rows(rows)
        except DatasetError as exc:
            raise HTTPException(400, str(exc)) from None

    def check_texts(texts: Any) -> list[str]:
        if not isinstance(texts, list) or not texts or len(texts) > s.max_files:
            raise HTTPException(400, f"give 1 to {s.max_files} texts")
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise HTTPException(400, f"text {i} is empty or not a string")
            if len(t) > s.max_text_chars:
                raise HTTPException(413, f"text {i} has {len(t)} characters; at most "
                                         f"{s.max_text_chars}")
        return texts

    def verify_embeddings(ea: Any, eb: Any) -> dict:
        score = float(embedder.score(ea, eb)[0])
        if not math.isfinite(score):
            raise HTTPException(400, "the score is not finite (values too large for the "
                                     "model?)")
        return {"score": score, "same": embedder.decide(score),
                "threshold": embedder.threshold, "higher_is_closer": embedder.higher_is_closer}

    def identify_embeddings(names: list[Any], emb: Any, k: int, response: Response,
                            min_version: int | None) -> dict:
        if k > s.max_k:
            raise HTTPException(400, f"k is at most {s.max_k}")
        threshold = embedder.threshold
        key = "text" if text_model else "row" if row_model else "file"
        # the version read before searching: the answer includes at least that one
        versioned(response, reach(min_version))
        try:
            results = identify_results(gallery, names, emb, k, threshold, key)
        except StoreUnavailable:
            raise
        except GalleryError as exc:
            raise HTTPException(400, str(exc)) from None
        return {"results": results, "threshold": threshold,
                "higher_is_closer": gallery.higher_is_closer}

    def enroll_embeddings(label: str, emb_fn: Any, sources: list[str], key: str | None,
                          response: Response) -> dict:
        try:
            label = check_label(label)  # before embedding: a bad label costs nothing
            done = gallery.enroll(label, emb_fn(), sources=sources, idempotency_key=key)
        except IdempotencyConflict as exc:
            raise HTTPException(409, str(exc)) from None
        except StoreUnavailable:
            raise
        except GalleryError as exc:
            raise HTTPException(400, str(exc)) from None
        versioned(response)  # after the enroll: includes it
        if done.replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return {"label": label, "added": done.added,
                "references": gallery.counts().get(label, 0)}

    @app.get("/health")
    def health(response: Response) -> dict:
        """Readiness (no key needed): 200 ``ok``, or 503 ``unavailable`` while the
        gallery's database cannot be reached."""
        versioned(response)
        try:
            gallery.check_current()
        except StoreUnavailable as exc:
            response.status_code = 503
            return {"status": "unavailable", "error": _public(str(exc)),
                    "version": gallery.version}
        return {"status": "ok", "classes": len(gallery.labels()), "references": len(gallery),
                "version": gallery.version}

    @app.post("/embed")
    async def embed(request: Request) -> dict:
        """Embeddings of uploaded images (multipart ``files``)."""
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("application/json"):
            try:
                payload = await request.json()
            except ValueError:  # JSONDecodeError, UnicodeDecodeError, over-long integers
                raise HTTPException(400, "malformed JSON body") from None
            except RecursionError:  # [[[[... a million deep
                raise HTTPException(400, "malformed JSON body: nested too deeply") from None
            if row_model and isinstance(payload, dict) and "texts" not in payload:
                if not isinstance(payload.get("rows"), list):
                    raise HTTPException(400, 'expected {"rows": [{"column": value}, ...]}')
                emb = await run_in_threadpool(embed_rows, payload["rows"])
                return {"embeddings": emb.tolist(), "dim": embedder.dim}
            if not isinstance(payload, dict) or not isinstance(payload.get("texts"), list):
                raise HTTPException(400, 'expected {"texts": ["...", ...]}')
            texts = check_texts(payload["texts"])
            if row_model:
                raise no_images()
            if not text_model:
                raise HTTPException(415, "this model embeds images: send them as multipart "
                                         "files")
            emb = await run_in_threadpool(embedder.embed_texts, texts)
            return {"embeddings": emb.tolist(), "dim": embedder.dim}
        if text_model or row_model:
            raise no_images()
        if not ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            raise HTTPException(415, "send images as multipart/form-data field 'files'")
        form = await request.form(max_files=s.max_files + 1, max_fields=16)
        files = [f for f in form.getlist("files") if isinstance(f, FormFile)]
        images = await run_in_threadpool(read_files, files)
        emb = await run_in_threadpool(embedder.embed, images)
        return {"embeddings": emb.tolist(), "dim": embedder.dim}

    if text_model:
        @app.post("/verify")
        def verify_texts(body: TextPair) -> dict:
            """Are two texts of the same class? Score, decision at the calibrated threshold."""
            ea, eb = embedder.embed_texts(check_texts([body.a, body.b])).split(1)
            return verify_embeddings(ea, eb)

        @app.post("/identify")
        def identify_texts(body: Texts, response: Response,
                           k: Annotated[int, Query(ge=1)] = 5,
                           min_version: Annotated[int | None, Query(ge=0)] = None) -> dict:
            """Ranked gallery classes for each text, and the open-set decision."""
            texts = check_texts(body.texts)
            return identify_embeddings(texts, embedder.embed_texts(texts), k, response,
                                       min_version)

        @app.post("/enroll")
        def enroll_texts(body: TextEnroll, response: Response,
                         idempotency_key: Annotated[str | None, Header()] = None) -> dict:
            """Add reference texts for a class label (a new label is a new class)."""
            texts = check_texts(body.texts)
            return enroll_embeddings(body.label, lambda: embedder.embed_texts(texts),
                                     [t[:200] for t in texts], idempotency_key, response)
    elif row_model:
        @app.post("/verify")
        def verify_rows(body: RowPair) -> dict:
            """Are two rows of the same class? Score, decision at the calibrated threshold."""
            ea, eb = embed_rows([body.a, body.b]).split(1)
            return verify_embeddings(ea, eb)

        @app.post("/identify")
        def identify_rows(body: Rows, response: Response, k: Annotated[int, Query(ge=1)] = 5,
                          min_version: Annotated[int | None, Query(ge=0)] = None) -> dict:
            """Ranked gallery classes for each row, and the open-set decision."""
            return identify_embeddings(list(range(len(body.rows))), embed_rows(body.rows), k,
                                       response, min_version)

        @app.post("/enroll")
        def enroll_rows(body: RowEnroll, response: Response,
                        idempotency_key: Annotated[str | None, Header()] = None) -> dict:
            """Add reference rows for a class label (a new label is a new class)."""
            return enroll_embeddings(body.label, lambda: embed_rows(body.rows),
                                     [json.dumps(r)[:200] for r in body.rows],
                                     idempotency_key, response)
    else:
        def form_only(request: Request) -> None:
            """415 before the body is parsed: JSON (or anything but a form) to an image
            model would otherwise be a 400 about missing form fields."""
            ctype = request.headers.get("content-type", "")
            if not ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
                raise HTTPException(415, "this model embeds images: send them as "
                                         "multipart/form-data files")

        @app.post("/verify", dependencies=[Depends(form_only)])
        def verify(a: Annotated[UploadFile, File()], b: Annotated[UploadFile, File()]
                   ) -> dict:
            """Are two images of the same class? Score, decision at the calibrated
            threshold."""
            ea, eb = embedder.embed(read_files([a, b])).split(1)
            return verify_embeddings(ea, eb)

        @app.post("/identify", dependencies=[Depends(form_only)])
        def identify(files: Annotated[list[UploadFile], File()], response: Response,
                     k: Annotated[int, Query(ge=1)] = 5,
                     min_version: Annotated[int | None, Query(ge=0)] = None) -> dict:
            """Ranked gallery classes for each uploaded image, and the open-set decision."""
            if k > s.max_k:
                raise HTTPException(400, f"k is at most {s.max_k}")
            return identify_embeddings([f.filename for f in files],
                                       embedder.embed(read_files(files)), k, response,
                                       min_version)

        @app.post("/enroll", dependencies=[Depends(form_only)])
        def enroll(label: Annotated[str, Form()], files: Annotated[list[UploadFile], File()],
                   response: Response,
                   idempotency_key: Annotated[str | None, Header()] = None) -> dict:
            """Add reference images for a class label (a new label is a new class)."""
            images = read_files(files)
            return enroll_embeddings(label, lambda: embedder.embed(images),
                                     [f.filename or "" for f in files], idempotency_key,
                                     response)

    def remove_class(label: str, response: Response) -> dict:
        try:
            removed = gallery.remove(label)
        except StoreUnavailable:
            raise
        except GalleryError as exc:
            raise HTTPException(400, str(exc)) from None
        except KeyError:
            raise HTTPException(404, f"no class {label!r} in the gallery") from None
        versioned(response)
        return {"label": label, "removed": removed}

    @app.delete("/classes/{label}")
    def delete_class(label: str, response: Response) -> dict:
        """Remove a class and all its references (a label that a URL path cannot hold, such
        as one with '/', is removed with ``DELETE /classes?label=...``)."""
        return remove_class(label, response)

    @app.delete("/classes")
    def delete_class_by_query(label: Annotated[str, Query()], response: Response) -> dict:
        """Remove a class and all its references, the label in the query string
        (percent-encoded UTF-8): any label that can be enrolled can be removed this way."""
        return remove_class(label, response)

    @app.get("/classes")
    def classes(response: Response,
                min_version: Annotated[int | None, Query(ge=0)] = None) -> dict:
        """Enrolled class labels with their number of references (``min_version``: as
        for ``/identify``)."""
        versioned(response, reach(min_version))
        return {"classes": gallery.counts()}

    app.add_middleware(BodyLimit, limit=s.max_body_bytes)
    app.add_middleware(ApiKeyAuth, api_key=s.api_key, admin_key=s.admin_key)
    return app


def _read_key(env: str, path: str | None) -> str | None:
    if path:
        try:
            key = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read key file {path}: {exc}") from None
    else:
        key = os.environ.get(env, "").strip()
    if path and not key:
        raise ConfigError(f"key file {path} is empty")
    return key or None


def _url_host(address: str) -> str:
    """A bound address as a URL's host: IPv6 in brackets, a zone's ``%`` escaped
    (RFC 6874: ``fe80::1%eth0`` is ``[fe80::1%25eth0]``)."""
    return f"[{address.replace('%', '%25')}]" if ":" in address else address


def _loopback(host: str) -> bool:
    """Whether ``host`` is an address of this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a name other than localhost: it may resolve anywhere
        return False


def run(model_dir: str, gallery_dir: str, host: str = "127.0.0.1", port: int = 8000,
        api_key_file: str | None = None, admin_key_file: str | None = None,
        no_auth: bool = False, settings: ServeSettings | None = None) -> None:
    """Start the service (blocks until stopped; Ctrl+C stops it cleanly). ``port`` 0 takes
    a free port, which the log names ("listening on http://HOST:PORT", a warning so that
    ``--quiet`` shows it). A port it cannot listen on is a ConfigError before the model loads.

    Refuses (:class:`~siamkit.config.ConfigError`, a ValueError) to start without an API
    key unless ``no_auth``, and ``no_auth`` on any address but a loopback one (127.0.0.0/8,
    ::1, localhost). An admin key is enforced for enrolling and deleting under ``no_auth``
    too.
    """
    if no_auth and not _loopback(host):
        raise ConfigError(f"--no-auth with --host {host}: a service without a key must listen "
                         f"on this machine only (127.0.0.1, ::1 or localhost); set an API key "
                         f"(SIAMKIT_API_KEY or --api-key-file) to listen on {host}")
    try:
        import uvicorn
    except ImportError:  # pragma: no cover - depends on the optional extra
        raise ConfigError("serving needs the serve extra: pip install 'siamkit[serve]'") from None
    s = settings or ServeSettings()
    s.api_key = _read_key("SIAMKIT_API_KEY", api_key_file)
    s.admin_key = _read_key("SIAMKIT_ADMIN_KEY", admin_key_file)
    s.no_auth = no_auth
    if s.api_key is None and not no_auth:
        raise ConfigError("no API key: set SIAMKIT_API_KEY or --api-key-file (or --no-auth "
                         "for a trusted local test)")
    if no_auth and s.api_key is not None:
        logger.warning("--no-auth, but an API key is configured: the key is still required")
    if not _loopback(host):
        logger.warning("listening on %s: reachable from other machines", host)
    sock = listen_socket(host, port)  # before the model loads: a taken port fails at once
    try:
        app = create_app(model_dir, gallery_dir, s)
        address, bound = sock.getsockname()[:2]  # what was bound ("localhost": 127.0.0.1)
        # asked for any port, the caller needs this line even under --quiet
        logger.log(logging.WARNING if port == 0 else logging.INFO, "listening on http://%s:%d",
                   _url_host(address), bound)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:  # Ctrl+C: uvicorn has shut down cleanly, as uvicorn.run does
            pass
    finally:
        sock.close()


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host``:``port`` for the service; port 0 takes a free one.
    Raises ConfigError naming the address when it cannot listen there (the port in use,
    the address not this machine's, IPv6 unavailable)."""
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    sock = None
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bare, port))
        sock.listen(2048)  # listening now: a second server on this port fails here, not later
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise ConfigError(f"cannot listen on {host} port {port}: "
                          f"{exc.strerror or exc}") from None
    return sock
