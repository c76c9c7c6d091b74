"""A throwaway PostgreSQL cluster for tests and benchmarks: initdb and pg_ctl in a temporary
folder, listening on a free loopback port, trust authentication, removed afterwards.

    cluster = TempCluster().start()
    url = cluster.create_database("t1")     # postgresql://postgres@127.0.0.1:PORT/t1
    cluster.restart()                       # same port, same data
    cluster.cleanup()

initdb refuses to run as root: as root (CI) the cluster runs as the ``postgres`` system
user through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl (PATH first, then Debian's layout)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(d) / "initdb").is_file() and (Path(d) / "pg_ctl").is_file():
            return Path(d)
    return None


def missing() -> str | None:
    """Why a cluster cannot be started here (None: it can)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg 3 is not installed (pip install 'siamkit[postgres]')"
    if _bin_dir() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) not found"
    if os.geteuid() == 0 and not shutil.which("runuser"):
        return "running as root without runuser: initdb refuses root"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the cluster"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TempCluster:
    """A PostgreSQL cluster in a temporary folder (see the module docstring).

    Args:
        durable: keep fsync on (a benchmark of commits); tests turn it off for speed.
    """

    def __init__(self, durable: bool = False) -> None:
        self.bin = _bin_dir()
        if self.bin is None:
            raise RuntimeError(missing() or "no PostgreSQL binaries")
        self.durable = durable
        self.root = Path(tempfile.mkdtemp(prefix="siamkit-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.running = False

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        if os.geteuid() == 0:
            cmd = ("runuser", "-u", "postgres", "--", *cmd)
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120)

    def start(self) -> TempCluster:
        """initdb (once) and start the server; returns self."""
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        if not self.data.exists():
            self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust",
                      "-U", "postgres", "--no-sync", "-E", "UTF8")
        options = (f"-k {self.root} -c listen_addresses=127.0.0.1 -p {self.port} "
                   f"-c max_connections=200")
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        result = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
                           "-l", str(self.root / "log"), "-w", "-t", "60", "start",
                           check=False)
        if result.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {result.stderr}\n{log[-2000:]}")
        self.running = True
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients, ``immediate``: like a crash)."""
        if self.running:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                      "stop", check=False)
            self.running = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def cleanup(self) -> None:
        """Stop the server and remove its folder."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def wait_until_down(self, timeout: float = 10) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.05)
