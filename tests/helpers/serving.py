"""The match service as the tests start it: `python -m ridematch_nb serve` in a child
process on a free port, the load k6 sends it meanwhile, and what they read of its
/metrics."""

import contextlib
import threading
import time

import httpx
import pytest

from ridematch_nb.bench.serve import k6_run
from ridematch_nb.ports import free_port
from ridematch_nb.process import ChildExited, started_server
from tests.conftest import TEST_PARAMS


@contextlib.contextmanager
def running_service(run_dir, env: dict | None = None, workers: int = 1, attempts: int = 3):
    """`serve` on the chain's model, on a free port, until the block ends (another port
    when a process beside took that one between our choice and the bind)."""
    port = free_port()
    args = ["serve", "--params", TEST_PARAMS, "--run", str(run_dir), "--port", str(port)]
    args += ["--workers", str(workers)]
    url = f"http://127.0.0.1:{port}"
    with contextlib.ExitStack() as running:
        try:
            running.enter_context(started_server(args, f"{url}/health", env=env, timeout_s=90))
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
