"""Start and stop a real `bentoml serve` (its own process group) for tests and benchmarks."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from opt.config import PROJECT_ROOT

BIN = Path(sys.executable).parent  # this environment's `bentoml`


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env: dict, log: Path, target: str = "opt.serving.service:OPTService", timeout: float = 180,
                 cwd: Path = PROJECT_ROOT):
    """`bentoml serve target` on a free port of 127.0.0.1; returns (process, base URL) once /readyz answers 200."""
    import httpx

    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen([str(BIN / "bentoml"), "serve", target, "--port", str(port)], cwd=cwd, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url, deadline = f"http://127.0.0.1:{port}", time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bentoml serve exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise TimeoutError(f"bentoml serve not ready in {timeout} s:\n{log.read_text()[-4000:]}")


def stop_server(proc) -> None:
    """SIGTERM to the server's own process group (its workers), SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
