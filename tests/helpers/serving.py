"""The match service as the tests start it: `python -m ridematch_nb serve` in a child
process on a free port, and what they read of its /metrics."""

import contextlib
import os
import subprocess
import sys
import tempfile
import time

import httpx
import pytest

from ridematch_nb.config import PROJECT_ROOT
from tests.conftest import TEST_PARAMS
from tests.helpers.ports import free_port


@contextlib.contextmanager
def process(command: list[str], env: dict | None = None):
    """A child process of ours, its output in a file (a pipe nobody reads would fill and
    stall it), stopped when the block ends."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=log,
            text=True,
            env={**os.environ, **(env or {})},
        )
        try:
            yield proc, log
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def exited(proc, log) -> str:
    log.seek(0)
    return f"exited {proc.returncode}: {log.read()[-2000:]}"


@contextlib.contextmanager
def running_service(run_dir, env: dict | None = None, workers: int = 1, attempts: int = 3):
    """`serve` on the chain's model, on a free port, until the block ends (another port
    when a process beside took that one between our choice and the bind)."""
    port = free_port()
    command = [sys.executable, "-m", "ridematch_nb", "serve", "--params", TEST_PARAMS]
    command += ["--run", str(run_dir), "--port", str(port), "--workers", str(workers)]
    url = f"http://127.0.0.1:{port}"
    with process(command, env) as (proc, log):
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                said = exited(proc, log)
                if "address already in use" in said and attempts > 1:
                    break
                pytest.fail("serve " + said)
            try:
                up = httpx.get(f"{url}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                up = False
            if up:
                yield url
                return
            assert time.monotonic() < deadline, "serve did not answer /health in 90 s"
            time.sleep(0.3)
    with running_service(run_dir, env, workers, attempts - 1) as url:
        yield url


def sample(service: str, name: str) -> float:
    """One series' value in the service's /metrics (0 before its first sample)."""
    for line in httpx.get(f"{service}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0
