"""``python -m token_guard.demo`` as a real process on a free loopback port, with its own
``--data-dir`` and its output captured in files (used by the demo, browser and client tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import free_port, interruptible

READY_LINE = "Ctrl-C stops the demo."
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class DemoProcess:
    """A running ``python -m token_guard.demo`` and where its output goes."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    stdout_path: Path
    stderr_path: Path

    @property
    def url(self) -> str:
        """The base URL the demo prints."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def stdout(self) -> str:
        """Everything the demo printed so far."""
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        """The demo's log (uvicorn's access log among it)."""
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def interrupt(self, timeout: float = 30) -> int:
        """Ctrl-C: send SIGINT and return the exit status."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=timeout)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def demo_process(
    data_dir: Path | None, logs: Path, *, port: int | None = None, cwd: Path | None = None
) -> Iterator[DemoProcess]:
    """Start the demo (in ``cwd``; ``data_dir`` None: its default) and wait until it
    listens; on exit, stop it if the test did not."""
    port = port or free_port()
    logs.mkdir(parents=True, exist_ok=True)
    stamp = f"{port}-{time.monotonic_ns()}"
    out_path, err_path = logs / f"demo-{stamp}.out", logs / f"demo-{stamp}.err"
    # This tree first, wherever cwd is.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "token_guard.demo", "--port", str(port),
             *(["--data-dir", str(data_dir)] if data_dir is not None else [])],
            stdout=out, stderr=err, env=env, cwd=cwd, preexec_fn=interruptible,
        )
    if data_dir is None:
        data_dir = (cwd or Path.cwd()) / "token_guard_demo"
    demo = DemoProcess(process, port, data_dir, out_path, err_path)
    try:
        deadline = time.monotonic() + 60
        while not (READY_LINE in demo.stdout and _accepts(port)):
            if process.poll() is not None:
                pytest.fail(f"the demo exited with {process.returncode}:\n{demo.stdout}\n"
                            f"{demo.stderr}")
            if time.monotonic() > deadline:
                pytest.fail(f"the demo did not start in 60 s:\n{demo.stdout}\n{demo.stderr}")
            time.sleep(0.05)
        yield demo
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
