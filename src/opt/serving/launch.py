"""Start and stop a real `bentoml serve` (its own process group) for tests and benchmarks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from opt.config import PROJECT_ROOT
from opt.servers import free_port, stop_process_group, wait_ready

BIN = Path(sys.executable).parent  # this environment's `bentoml`


def start_server(
    env: dict, log: Path, target: str = "opt.serving.service:OPTService", timeout: float = 180, cwd: Path = PROJECT_ROOT
):
    """`bentoml serve target` on a free port of 127.0.0.1; returns (process, base URL) once /readyz answers 200."""
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "bentoml"), "serve", target, "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, f"{url}/readyz", timeout, describe=lambda: log.read_text()[-4000:])
    except BaseException:
        stop_process_group(proc)
        raise
    return proc, url


def stop_server(proc) -> None:
    """Stop the server and its workers."""
    stop_process_group(proc)
