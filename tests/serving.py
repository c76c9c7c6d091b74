"""Starting ``siamkit serve`` in a new process for a test, on a port it picks itself."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path


def _text(log: Path) -> str:
    return log.read_text(errors="replace")


def start_server(argv: list[str], log: Path, env: dict | None = None,
                 timeout: float = 60) -> tuple[subprocess.Popen, str]:
    """``siamkit serve`` with ``--port 0`` in a new process, logging to ``log``: the
    process and its base URL once /health answers. The port is the one the server
    bound and logged, so parallel tests never race for one."""
    import httpx

    out = open(log, "wb")  # noqa: SIM115 - the process writes it until it stops
    proc = subprocess.Popen([*argv, "--port", "0"], env=env, stdout=out,
                            stderr=subprocess.STDOUT)
    out.close()
    deadline, url = time.time() + timeout, None
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {_text(log)[-2000:]}")
        if url is None:
            found = re.search(r"listening on (http://\S+)\n", _text(log))
            url = found and found.group(1)
        if url:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                pass
        time.sleep(0.1)
    proc.kill()
    proc.wait(20)
    raise RuntimeError(f"server did not come up in {timeout:.0f} s: "
                       f"{_text(log)[-2000:]}")
