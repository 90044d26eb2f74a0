"""The match service as the tests start it: `python -m ridematch_nb serve` in a child
process on a free port, the load k6 sends it meanwhile, and what they read of its
/metrics."""

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import pytest

from ridematch_nb.bench.serve import k6_run
from ridematch_nb.config import PROJECT_ROOT
from ridematch_nb.ports import free_port
from ridematch_nb.process import ChildExited, wait_until_answering
from tests.conftest import TEST_PARAMS


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


def output(log) -> str:
    """The last of what a child of ``process`` wrote."""
    log.seek(0)
    return log.read()[-2000:]


@contextlib.contextmanager
def running_service(run_dir, env: dict | None = None, workers: int = 1, attempts: int = 3):
    """`serve` on the chain's model, on a free port, until the block ends (another port
    when a process beside took that one between our choice and the bind)."""
    port = free_port()
    command = [sys.executable, "-m", "ridematch_nb", "serve", "--params", TEST_PARAMS]
    command += ["--run", str(run_dir), "--port", str(port), "--workers", str(workers)]
    url = f"http://127.0.0.1:{port}"
    with process(command, env) as (proc, log):

        def alive() -> bool:
            try:
                return httpx.get(f"{url}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        try:
            wait_until_answering(alive, proc.poll, "serve", lambda: output(log), 90)
        except ChildExited as exc:
            if "address already in use" not in str(exc) or attempts <= 1:
                pytest.fail(str(exc))
        else:
            yield url
            return
    with running_service(run_dir, env, workers, attempts - 1) as url:
        yield url


@contextlib.contextmanager
def k6_meanwhile(url: str, bodies: list[str], rate: int, duration_s: int, lead_s: float = 2):
    """k6 sending ``rate`` requests/s to ``url`` (open loop) in a thread, the block entered
    ``lead_s`` after it began; the dict yielded holds k6's figures once the block ends."""
    load: dict = {}
    failed: list[BaseException] = []

    def send():
        try:
            load.update(k6_run(url, bodies, rate, duration_s))
        except BaseException as exc:  # said in the test, not lost in the thread
            failed.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(lead_s)
    try:
        yield load
    finally:
        sender.join()
        if failed:
            raise failed[0]


def sample(service: str, name: str) -> float:
    """One series' value in the service's /metrics (0 before its first sample)."""
    for line in httpx.get(f"{service}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0
