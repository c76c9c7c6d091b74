"""Text pair files: CSV, TSV or JSONL rows of two texts and a label or a graded score.

Columns are named (``a``, ``b``, ``label`` / ``score`` by default, configurable); a column
given as a number is a 0-based position, for files without a header. Texts are stored
once: a text that appears in several pairs is one item, so duplicate groups (connected
components of positive pairs) and leakage checks see it as the same thing.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .download import DatasetError
from .pairs import same_from_labels

__all__ = ["TextPairs", "read_text_pairs", "read_scores", "write_text_pairs", "pair_format",
           "parse_ditto_record", "serialize_record", "read_texts", "read_pair_texts",
           "read_ditto", "load_mrpc", "load_stsb", "load_ditto", "read_rows", "loads_row"]

FORMATS = ("csv", "tsv", "jsonl", "ditto")


@dataclass
class TextPairs:
    """Pairs of texts by index into ``texts``; ``same`` for labelled pairs, ``score`` for
    graded ones (either may be None). ``raw_labels`` keeps each pair's label as written."""

    texts: list[str]
    left: np.ndarray
    right: np.ndarray
    same: np.ndarray | None = None
    score: np.ndarray | None = None
    raw_labels: list[str] | None = None
    records: list[dict[str, str]] | None = None  # for record pairs: each text's attributes

    def __len__(self) -> int:
        return len(self.left)

    def subset(self, keep: np.ndarray) -> TextPairs:
        """The pairs where ``keep`` (bool per pair) holds, with unused texts dropped."""
        keep = np.asarray(keep, dtype=bool)
        left, right = self.left[keep], self.right[keep]
        used = np.unique(np.concatenate([left, right])).astype(int)
        remap = np.full(len(self.texts), -1)
        remap[used] = np.arange(len(used))
        pick = lambda a: None if a is None else a[keep]  # noqa: E731
        raw = None if self.raw_labels is None else [r for r, k in zip(self.raw_labels, keep,
                                                                       strict=True) if k]
        recs = None if self.records is None else [self.records[i] for i in used]
        return TextPairs([self.texts[i] for i in used], remap[left], remap[right],
                         pick(self.same), pick(self.score), raw, recs)


def pair_format(path: str | Path, fmt: str | None = None) -> str:
    """The format named, or the one the file's suffix implies (.csv, .tsv/.txt, .jsonl)."""
    if fmt:
        if fmt not in FORMATS:
            raise DatasetError(f"unknown pair format {fmt!r}; known: {', '.join(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower()
    by_suffix = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl",
                 ".json": "jsonl"}
    if suffix not in by_suffix:
        raise DatasetError(f"{path}: cannot tell the pair format from {suffix!r}; "
                           f"give one of {', '.join(FORMATS)}")
    return by_suffix[suffix]


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    twice = next((k for k in keys if keys.count(k) > 1), None)
    if twice is not None:
        raise ValueError(f"column {twice!r} appears twice")
    return dict(pairs)


def loads_row(text: str) -> Any:
    """``json.loads`` that refuses an object naming a key twice (JSON would keep the last
    silently). Raises ValueError (json.JSONDecodeError for malformed JSON)."""
    return json.loads(text, object_pairs_hook=_unique_keys)


def read_rows(path: Path, fmt: str, columns: list[str]) -> tuple[list[dict[str, str]], bool]:
    """Rows of a CSV / TSV / JSONL file as {column: value}, and whether the columns are
    named. Positional ``columns`` ("0", "1", ...) read a header-less file; otherwise the
    first CSV / TSV row is the header (JSONL rows name their own). The file is UTF-8 (a
    byte-order mark is allowed)."""
    try:
        return _read_rows(path, fmt, columns)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save "
                           f"it as UTF-8") from None


def _read_rows(path: Path, fmt: str, columns: list[str]) -> tuple[list[dict[str, str]], bool]:
    if fmt == "jsonl":
        rows = []
        with open(path, encoding="utf-8-sig") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = loads_row(line)
                except ValueError as exc:  # malformed, or a key given twice
                    raise DatasetError(f"{path}, line {n}: not a JSON row ({exc})") from None
                if not isinstance(obj, dict):
                    raise DatasetError(f"{path}, line {n}: expected a JSON object")
                nested = [k for k, v in obj.items() if isinstance(v, dict | list)]
                if nested:
                    raise DatasetError(f"{path}, line {n}: column {nested[0]!r} holds a "
                                       f"{type(obj[nested[0]]).__name__}, not a value")
                rows.append({str(k): "" if v is None else str(v) for k, v in obj.items()})
        return rows, True
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open(path, newline="", encoding="utf-8-sig") as f:
        if fmt == "tsv":  # tab files quote nothing (MRPC, STS-B have bare quotes in text)
            table = [line.rstrip("\r\n").split("\t") for line in f]
        else:
            table = list(csv.reader(f))
    table = [r for r in table if any(x.strip() for x in r)]
    if not table:
        return [], False
    positional = all(c.isdigit() for c in columns)
    if positional:
        return [{str(i): v for i, v in enumerate(r)} for r in table], False
    header = [h.strip() for h in table[0]]
    twice = sorted({h for h in header if h and header.count(h) > 1})
    if twice:
        raise DatasetError(f"{path}: column {twice[0]!r} appears twice in the header")
    for n, r in enumerate(table[1:], 1):
        if len(r) > len(header):  # a value would be cut off, or the columns shifted
            sep = "tab" if fmt == "tsv" else "comma"
            raise DatasetError(f"{path}, row {n} under the header: {len(r)} fields, the "
                               f"header has {len(header)} (an unquoted {sep} in a value?)")
    return [dict(zip(header, r, strict=False)) for r in table[1:]], True


def read_text_pairs(
    path: str | Path,
    fmt: str | None = None,
    a: str = "a",
    b: str = "b",
    label: str | None = "label",
    score: str | None = None,
    positive_label: str = "1",
) -> TextPairs:
    """Read a pair file (see the module docstring).

    Args:
        path: the file.
        fmt: ``csv``, ``tsv``, ``jsonl`` or ``ditto`` (records, read by
            :func:`read_ditto`); from the suffix when None.
        a, b: the two text columns (names, or 0-based positions for header-less files).
        label: the label column (None for graded files); a pair is "same" when its label
            equals ``positive_label`` as text. A column with more than two values (or an
            empty label) is refused: a typo must not silently become "different".
        score: the graded-score column, read as a float (None for labelled files).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"pair file not found: {path}")
    fmt = pair_format(path, fmt)
    if fmt == "ditto":
        return read_ditto(path, positive_label=positive_label)
    if label is None and score is None:
        raise DatasetError("a pair file needs a label column or a score column")
    columns = [c for c in (a, b, label, score) if c is not None]
    rows, _ = read_rows(path, fmt, columns)
    if not rows:
        raise DatasetError(f"{path}: no pairs")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise DatasetError(f"{path}: no column {missing[0]!r}; the first row has "
                           f"{sorted(rows[0])[:12]}")
    index: dict[str, int] = {}
    left, right, raw, scores = [], [], [], []
    for n, row in enumerate(rows, 1):
        for col, side in ((a, left), (b, right)):
            text = (row.get(col) or "").strip()
            if not text:
                raise DatasetError(f"{path}, pair {n}: empty text in column {col!r}")
            side.append(index.setdefault(text, len(index)))
        if label is not None:
            raw.append((row.get(label) or "").strip())
        if score is not None:
            try:
                scores.append(float(row.get(score) or "nan"))
            except ValueError:
                raise DatasetError(f"{path}, pair {n}: score {row.get(score)!r} is not a "
                                   f"number") from None
            if not np.isfinite(scores[-1]):
                raise DatasetError(f"{path}, pair {n}: missing score in column {score!r}")
    same = None if label is None else same_from_labels(path, raw, positive_label, label)
    return TextPairs(list(index), np.array(left, dtype=int), np.array(right, dtype=int), same,
                     np.array(scores) if score is not None else None,
                     raw if label is not None else None)


def read_scores(path: str | Path, positive_label: str = "1") -> tuple[np.ndarray, np.ndarray]:
    """A CSV of pair scores computed elsewhere (columns ``score`` and ``label``; others are
    ignored) -> (scores, same). Both kinds of pair must be there; labels are checked as
    :func:`read_text_pairs` checks them."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"scores file not found: {path}")
    rows, _ = read_rows(path, "csv", ["score", "label"])
    if not rows or not {"score", "label"} <= set(rows[0]):
        raise DatasetError(f"{path}: expected a header with columns score and label")
    scores = []
    for n, row in enumerate(rows, 1):
        try:
            scores.append(float(row.get("score") or "nan"))
        except ValueError:
            raise DatasetError(f"{path}, pair {n}: score {row.get('score')!r} is not a "
                               f"number") from None
        if not np.isfinite(scores[-1]):
            raise DatasetError(f"{path}, pair {n}: the score must be a finite number")
    same = same_from_labels(path, [(r.get("label") or "").strip() for r in rows],
                             positive_label, "label")
    if same.all():
        raise DatasetError(f"{path}: every pair is 'same' ({positive_label!r}); calibrating "
                           f"needs different pairs too")
    return np.array(scores), same


def read_texts(path: str | Path, column: str = "text", fmt: str | None = None,
               skip_empty: bool = False) -> tuple[list[str], list[int]]:
    """One column of a CSV / TSV / JSONL file as a corpus: (texts, their row numbers, 1-based
    after the header). Empty cells are an error unless ``skip_empty``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"input file not found: {path}")
    fmt = pair_format(path, fmt)
    if fmt == "ditto":
        raise DatasetError("a corpus is a CSV, TSV or JSONL file with a text column")
    rows, _ = read_rows(path, fmt, [column])
    if not rows:
        raise DatasetError(f"{path}: no rows")
    if column not in rows[0]:
        raise DatasetError(f"{path}: no column {column!r}; the first row has "
                           f"{sorted(rows[0])[:12]}")
    texts, numbers = [], []
    for n, row in enumerate(rows, 1):
        text = (row.get(column) or "").strip()
        if not text:
            if skip_empty:
                continue
            raise DatasetError(f"{path}, row {n}: empty text in column {column!r} (or pass "
                               f"--skip-empty)")
        texts.append(text)
        numbers.append(n)
    if not texts:
        raise DatasetError(f"{path}: every text is empty")
    return texts, numbers


def write_text_pairs(path: str | Path, pairs: TextPairs) -> Path:
    """Write pairs as CSV with a header: ``a,b`` then ``label`` and/or ``score``."""
    path = Path(path)
    header = ["a", "b"] + (["label"] if pairs.same is not None else []) + (
        ["score"] if pairs.score is not None else [])
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for n in range(len(pairs)):
            row = [pairs.texts[pairs.left[n]], pairs.texts[pairs.right[n]]]
            if pairs.same is not None:
                row.append(pairs.raw_labels[n] if pairs.raw_labels else int(pairs.same[n]))
            if pairs.score is not None:
                row.append(f"{pairs.score[n]:g}")
            w.writerow(row)
    return path


# ---------------------------------------------------------------- records (Ditto format)


def parse_ditto_record(text: str) -> dict[str, str]:
    """``COL attr VAL value COL attr VAL value ...`` -> {attr: value}, in order.

    Values may be empty (``VAL`` followed by the next ``COL``) and attribute names may hold
    spaces; a value containing the word ``COL`` or ``VAL`` inside it is kept as written
    (only the tokens at the start of a field split records).
    """
    import re

    text = text.strip()
    if not text.startswith("COL"):
        raise ValueError(f"a Ditto record starts with 'COL', got {text[:40]!r}")
    fields: dict[str, str] = {}
    # split at "COL " that starts a field: the start, or after whitespace
    for part in re.split(r"(?:^|\s)COL\s", " " + text)[1:]:
        name, sep, value = part.partition(" VAL")
        if not sep:
            raise ValueError(f"attribute {name.strip()!r} has no VAL")
        fields[name.strip()] = value.strip()
    return fields


def serialize_record(record: dict[str, str], order: list[str] | None = None,
                     missing: str = "") -> str:
    """A record as text for the text twin: ``attr: value; attr: value``.

    ``order`` fixes the attribute order (others follow in their own order); attributes with
    an empty value are written with ``missing`` (dropped when ``missing`` is empty). A value
    that begins with an earlier attribute's value is written without that repeat (a
    description that starts by repeating the name would spend the token window twice).
    """
    names = list(order or []) + [k for k in record if k not in (order or [])]
    parts: list[str] = []
    earlier: list[str] = []
    for name in names:
        value = (record.get(name) or "").strip()
        for prior in earlier:
            if value.startswith(prior) and not value[len(prior):len(prior) + 1].isalnum():
                value = value[len(prior):].strip()
                break
        if value:
            earlier.append(value)
        elif not missing:
            continue
        else:
            value = missing
        parts.append(f"{name}: {value}")
    return "; ".join(parts)


def read_pair_texts(path: str | Path, fmt: str | None = None, a: str = "a", b: str = "b"
                    ) -> list[str]:
    """The distinct non-empty texts of a pair file's ``a`` and ``b`` columns, in order of
    first appearance, with no label needed (a Ditto file's records, serialised)."""
    if pair_format(path, fmt) == "ditto":
        return read_ditto(path).texts
    texts = [t for col in (a, b) for t in read_texts(path, col, fmt, skip_empty=True)[0]]
    return list(dict.fromkeys(texts))


def read_ditto(path: str | Path, positive_label: str = "1", missing: str = ""
               ) -> TextPairs:
    """Ditto entity-matching lines ``left<TAB>right<TAB>label``; records become text with
    :func:`serialize_record` (attribute order of the file). Records are in ``records``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"pair file not found: {path}")
    index: dict[str, int] = {}
    records: list[dict[str, str]] = []
    left, right, raw = [], [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            cells = line.rstrip("\r\n").split("\t")
            if len(cells) != 3:
                raise DatasetError(f"{path}, line {n}: expected left<TAB>right<TAB>label, got "
                                   f"{len(cells)} fields")
            for cell, side in ((cells[0], left), (cells[1], right)):
                try:
                    rec = parse_ditto_record(cell)
                except ValueError as exc:
                    raise DatasetError(f"{path}, line {n}: {exc}") from None
                text = serialize_record(rec, missing=missing) or "(empty record)"
                if text not in index:
                    index[text] = len(index)
                    records.append(rec)
                side.append(index[text])
            raw.append(cells[2].strip())
    if not raw:
        raise DatasetError(f"{path}: no pairs")
    bad = sorted(set(raw) - {"0", "1"})
    if bad:
        raise DatasetError(f"{path}: labels must be 0 or 1, found {bad[:3]}")
    return TextPairs(list(index), np.array(left), np.array(right),
                     np.array([v == positive_label for v in raw]), None, raw, records)


# ---------------------------------------------------------------- named datasets


def _mirror_file(root: str | Path | None, sub: str, name: str) -> Path:
    from .download import mirror_dir

    base = Path(root) if root is not None else mirror_dir()
    if base is None:
        raise DatasetError(f"no data folder given and SIAMKIT_MIRROR is not set (looking for "
                           f"{sub}/{name})")
    base = Path(base)
    for candidate in (base / sub / name, base / name):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"{name} not found under {base} (or {base / sub})")


def load_mrpc(split: str, root: str | Path | None = None) -> TextPairs:
    """MRPC ``train`` or ``test`` (official files, tab-separated, bare quotes kept)."""
    if split not in ("train", "test"):
        raise DatasetError(f"MRPC has train and test splits, not {split!r}")
    path = _mirror_file(root, "mrpc", f"msr_paraphrase_{split}.txt")
    return read_text_pairs(path, "tsv", a="#1 String", b="#2 String", label="Quality")


def load_stsb(split: str, root: str | Path | None = None) -> TextPairs:
    """STS-B ``train``, ``dev`` or ``test``: graded scores 0-5 (first 7 fields of a line)."""
    if split not in ("train", "dev", "test"):
        raise DatasetError(f"STS-B has train, dev and test splits, not {split!r}")
    path = _mirror_file(root, "stsbenchmark", f"sts-{split}.csv")
    return read_text_pairs(path, "tsv", a="5", b="6", label=None, score="4")


def load_ditto(folder: str | Path, split: str) -> TextPairs:
    """``<folder>/{train,valid,test}.txt`` of a Ditto-format entity-matching dataset."""
    if split not in ("train", "valid", "test"):
        raise DatasetError(f"Ditto datasets have train, valid and test, not {split!r}")
    return read_ditto(Path(folder) / f"{split}.txt")
