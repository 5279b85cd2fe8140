"""Local server processes (Prefect, BentoML, torchrun rendezvous): a free port, readiness, stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def wait_ready(proc: subprocess.Popen, url: str, timeout: float, describe=lambda: "") -> None:
    """Return once GET `url` answers 200; raise if `proc` exits first or `timeout` s pass.
    `describe()` adds context (e.g. the tail of the server's log) to the error."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with code {proc.returncode} before {url} answered\n{describe()}")
        if answers(url):
            return
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s\n{describe()}")


def stop_process_group(proc: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM to the process's own group (started with start_new_session), SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
