"""The documentation runs: every code block marked runnable in README.md and docs/*.md is
executed, in order, one temporary folder per file, on the mirror's real data.

Marking a block (the fence's info string):
- ```bash runnable / ```python runnable: executed (bash with -euo pipefail; python as a
  fresh process, so each python block carries its own imports);
- ``needs=a,b``: the mirror folders it reads; the file's blocks skip where one is absent;
- ```python file=NAME: not executed but written to NAME first (a module the next blocks
  import).
The blocks see ``M`` and ``SIAMKIT_MIRROR`` (the mirror), ``HF_HUB_OFFLINE=1`` and this
environment's ``siamkit`` first on PATH.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import MIRROR

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.S | re.M)
TIMEOUT = 600


@dataclass
class Block:
    lang: str
    code: str
    runnable: bool
    needs: tuple[str, ...]
    file: str | None
    line: int


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with their marks."""
    return blocks_of_text(path.read_text())


def blocks_of_text(text: str) -> list[Block]:
    """The fenced code blocks of Markdown text, with their marks."""
    found = []
    for m in FENCE.finditer(text):
        words = m.group(1).split()
        if not words:
            continue
        opts = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        found.append(Block(words[0], m.group(2), "runnable" in words[1:],
                           tuple(n for n in opts.get("needs", "").split(",") if n),
                           opts.get("file"), text[: m.start()].count("\n") + 1))
    return found


def marked(path: Path) -> list[Block]:
    return [b for b in blocks(path) if b.runnable or b.file]


RUNNABLE = [p for p in DOCS if any(b.runnable for b in blocks(p))]


def test_the_marks_are_well_formed_and_the_readme_quickstarts_are_marked():
    """Marks only on bash and python blocks; a file block names a .py file and is not also
    run; README's three quickstarts each run."""
    for path in DOCS:
        for b in marked(path):
            where = f"{path.name}:{b.line}"
            assert b.lang in ("bash", "python"), f"{where}: runnable {b.lang!r} block"
            assert not (b.runnable and b.file), f"{where}: both runnable and file="
            if b.file:
                assert b.lang == "python" and b.file.endswith(".py"), where
            for name in b.needs:
                assert re.fullmatch(r"[\w.-]+", name), f"{where}: needs={name!r}"
    readme = (ROOT / "README.md").read_text()
    for title in ("my folder of images", "my CSV of text pairs", "my own encoder in Python"):
        section = readme.split(f"## Quickstart: {title}", 1)
        assert len(section) == 2, f"README has no quickstart {title!r}"
        body = section[1].split("\n## ", 1)[0]
        assert any(b.runnable for b in blocks_of_text(body)), f"{title}: nothing runnable"


def test_readme_starts_with_the_two_commands_and_stays_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    head = "\n".join(lines[:6])
    assert "make demo" in head and "make test" in head
    assert len(lines) <= 250, f"README has {len(lines)} lines"


def test_every_result_file_the_docs_name_exists():
    """A figure's record is a file under benchmarks/results/: each one named exists."""
    results = ROOT / "benchmarks" / "results"
    for path in DOCS:
        text = path.read_text()
        named = set(re.findall(r"benchmarks/results/([\w.-]+\.json)", text))
        if path.name == "README.md":  # the results table names them bare, in backticks
            table = text.split("## Results", 1)[-1].split("\n## ", 1)[0]
            named |= set(re.findall(r"`([\w.-]+\.json)`", table))
        missing = sorted(n for n in named if not (results / n).is_file())
        assert not missing, f"{path.name} names result files that do not exist: {missing}"


def test_the_block_parser_reads_marks():
    text = ("intro\n```bash runnable needs=att_faces,mrpc\nsiamkit --version\n```\n"
            "```python file=mod.py\nX = 1\n```\n```python\nprint(1)\n```\n")
    got = blocks_of_text(text)
    assert [(b.lang, b.runnable, b.needs, b.file) for b in got] == [
        ("bash", True, ("att_faces", "mrpc"), None), ("python", False, (), "mod.py"),
        ("python", False, (), None)]
    assert got[0].code == "siamkit --version\n" and got[1].line == 5


@pytest.mark.parametrize("path", RUNNABLE, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_runnable_blocks_run(path: Path, tmp_path: Path):
    todo = marked(path)
    needs = sorted({n for b in todo for n in b.needs})
    absent = [n for n in needs if not (MIRROR / n).exists()]
    if absent:
        pytest.skip(f"mirror lacks {', '.join(absent)}")
    env = {**os.environ, "M": str(MIRROR), "SIAMKIT_MIRROR": str(MIRROR),
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": "",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for b in todo:
        if b.file:
            (tmp_path / b.file).write_text(b.code)
            continue
        cmd = (["bash", "-euo", "pipefail", "-c", b.code] if b.lang == "bash"
               else [sys.executable, "-c", b.code])
        r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=TIMEOUT)
        assert r.returncode == 0, (f"{path.name}:{b.line} failed ({r.returncode}):\n{b.code}\n"
                                   f"--- stdout\n{r.stdout[-3000:]}\n--- stderr\n"
                                   f"{r.stderr[-3000:]}")
