"""The label rule, content hashes and idempotency keys: what every gallery store checks."""

from __future__ import annotations

import hashlib
import unicodedata
from typing import Any

import numpy as np

from ..search import GalleryError

__all__ = ["MAX_LABEL_CHARS", "UNKNOWN", "check_label", "check_key", "content_hash", "show"]

UNKNOWN = "unknown"
MAX_LABEL_CHARS = 256

# characters that are invisible or reorder text, so that a label holding one can pose as
# another ("s\u200b5" shows as "s5"): soft hyphen, Arabic letter mark, Mongolian vowel
# separator, zero-width spaces and joiners, directional marks, line and paragraph
# separators, bidirectional embeddings / overrides / isolates, word joiner and invisible
# operators, byte order mark
_INVISIBLE = frozenset([0x00AD, 0x061C, 0x180E, *range(0x200B, 0x2010), 0x2028, 0x2029,
                        *range(0x202A, 0x202F), *range(0x2060, 0x2065), *range(0x2066, 0x206A),
                        0xFEFF])


def show(label: str) -> str:
    """A label quoted for an error message, hidden characters spelled out, cut at 40."""
    cut = label[:40]
    shown = "".join(ch if ch.isprintable() and ord(ch) not in _INVISIBLE else ascii(ch)[1:-1]
                    for ch in cut)
    return f"'{shown}'" + ("..." if len(label) > 40 else "")


def check_label(label: Any) -> str:
    """The class label as stored (NFC-normalised), or a GalleryError saying what is wrong.

    The one label rule, for enrolling and removing alike: a ``str`` that is valid UTF-8
    (no lone surrogates), not empty or only spaces, at most :data:`MAX_LABEL_CHARS`
    characters once normalised, not the reserved ``unknown``, without control characters
    (C0, DEL, C1) and without invisible or direction-changing characters (zero-width
    spaces and joiners, bidirectional overrides and isolates, byte order marks...), so no
    label can pose as another.

        >>> check_label("cafe\\u0301")  # a decomposed e-acute becomes one character
        'café'
    """
    if not isinstance(label, str):
        raise GalleryError(f"a class label must be a string, not {type(label).__name__}")
    try:
        label.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise GalleryError(f"class label {show(label)}: not valid UTF-8 (a lone surrogate "
                           f"at character {exc.start}); send the label as UTF-8 text") from None
    label = unicodedata.normalize("NFC", label)
    if not label.strip():
        raise GalleryError("a class label must be a non-empty string (not only spaces)")
    if label == UNKNOWN:
        raise GalleryError(f"{UNKNOWN!r} is reserved for open-set rejections; choose "
                           f"another label")
    if len(label) > MAX_LABEL_CHARS:
        raise GalleryError(f"class label {show(label)} ({len(label)} characters): a label "
                           f"must be at most {MAX_LABEL_CHARS} printable characters")
    for i, ch in enumerate(label):
        if unicodedata.category(ch) == "Cc":
            raise GalleryError(f"class label {show(label)}: control character "
                               f"U+{ord(ch):04X} at character {i}; a label must be "
                               f"printable text")
        if ord(ch) in _INVISIBLE:
            name = unicodedata.name(ch, "format character")
            raise GalleryError(f"class label {show(label)}: U+{ord(ch):04X} ({name}) at "
                               f"character {i} is invisible or changes the text direction, "
                               f"so the label could pose as another; remove it")
    return label


def content_hash(label: str, embedding: np.ndarray | bytes) -> str:
    """The content hash of a reference: SHA-256 (hex) of the UTF-8 label, a NUL byte and
    the float32 embedding bytes as stored (cosine galleries store them normalised). Two
    references are duplicates when their hashes are equal."""
    blob = embedding if isinstance(embedding, bytes) else np.ascontiguousarray(
        embedding, dtype=np.float32).tobytes()
    return hashlib.sha256(label.encode("utf-8") + b"\0" + blob).hexdigest()


def check_key(key: Any) -> str:
    """An idempotency key as given, or a GalleryError: 1 to 255 printable characters."""
    if not isinstance(key, str) or not 1 <= len(key) <= 255 or not key.isprintable():
        shown = show(key) if isinstance(key, str) else type(key).__name__
        raise GalleryError(f"idempotency key {shown}: must be 1 to 255 printable characters")
    return key
