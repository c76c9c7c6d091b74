"""The configuration reference, generated from the config dataclasses themselves: every
key, its type, its default and what it means (the comment beside or above it in
``config.py``). ``docs/configuration.md`` is its output; a test keeps them equal.

    python -m siamkit.config_reference > docs/configuration.md
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Any, get_type_hints

from . import config as config_module
from .config import Config

__all__ = ["reference_rows", "reference_markdown"]

_FIELD = re.compile(r"^\s+(\w+): [^=]+?(?:= (.+?))?\s*(?:#\s*(.*))?$")


def _meanings(cls: type) -> dict[str, str]:
    """Each field's comment: the lines of comment above it, then the one beside it."""
    out: dict[str, str] = {}
    above: list[str] = []
    for line in inspect.getsource(cls).splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# ").strip())
            continue
        m = _FIELD.match(line)
        if m and not stripped.startswith(('"', "def ", "@")):
            out[m.group(1)] = " ".join([*above, m.group(3) or ""]).strip()
        above = []
    return out


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def reference_rows() -> list[tuple[str, str, str, str]]:
    """(key, type, default, meaning) of every config key, section by section."""
    rows = []
    top = Config()
    for f in dataclasses.fields(Config):
        value = getattr(top, f.name)
        if not dataclasses.is_dataclass(value):
            rows.append((f.name, _type_name(get_type_hints(Config)[f.name]), repr(value),
                         _meanings(Config).get(f.name, "")))
            continue
        cls = type(value)
        hints, meanings = get_type_hints(cls, vars(config_module)), _meanings(cls)
        for sub in dataclasses.fields(cls):
            rows.append((f"{f.name}.{sub.name}", _type_name(hints[sub.name]),
                         repr(getattr(value, sub.name)), meanings.get(sub.name, "")))
    return rows


def reference_markdown() -> str:
    """The whole reference as Markdown (what docs/configuration.md holds)."""
    lines = ["# Configuration reference", "",
             "Every key of a siamkit config, generated from `siamkit/config.py` by "
             "`python -m siamkit.config_reference`. A config is YAML (or JSON) with these "
             "sections; `--set key=value` overrides one key on the command line, and "
             "`siamkit config show` prints a resolved config.", ""]
    section = None
    for key, kind, default, meaning in reference_rows():
        head = key.split(".")[0] if "." in key else "top level"
        if head != section:
            section = head
            doc = inspect.getdoc(type(getattr(Config(), head))) if head != "top level" else ""
            lines += ["", f"## {head}", ""] + ([doc.splitlines()[0], ""] if doc else [])
            lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        kind, default, meaning = (x.replace("|", "\\|") for x in (kind, default, meaning))
        lines.append(f"| `{key}` | `{kind}` | `{default}` | {meaning} |")
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(reference_markdown(), end="")
