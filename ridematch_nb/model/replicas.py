"""What the worker processes of one ``serve --workers N`` share: a folder of small files.

A reload reaches the one worker the connection landed on; that worker writes the run it
now serves into ``wanted.json`` (with a token of its own), and every worker, polling the
file twice a second, loads that run and writes its answer into ``served-<pid>.json``.
The worker that took the call waits for all N answers before it replies, so a client
that got a 200 is served the new model by every worker. A worker that uvicorn starts
again later reads ``wanted.json`` first, so it does not go back to the first run.

The same folder holds ``metrics/`` (``PROMETHEUS_MULTIPROC_DIR``): prometheus_client's
multiprocess mode, in which each worker's counters and histograms go to files there
and any worker's ``/metrics`` sums them all.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

SHARED_ENV = "RIDEMATCH_SERVE_SHARED"  # the folder, set by ``serve`` for its workers
WORKERS_ENV = "RIDEMATCH_SERVE_WORKERS"
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client reads it when imported
POLL_S = 0.5  # how often a worker looks for a reload another worker took
WAIT_S = 60.0  # how long the worker that took a reload waits for the others


@dataclass(frozen=True)
class Wanted:
    """The run every worker should serve, and the reload that asked for it."""

    token: str
    run: Path


class Replicas:
    """The shared folder of the ``workers`` processes of one ``serve``."""

    def __init__(self, folder: Path, workers: int) -> None:
        self.folder, self.workers = folder, workers
        self.wanted_file = folder / "wanted.json"

    @classmethod
    def from_env(cls) -> Replicas | None:
        """The folder ``serve`` named in this worker's environment; None in one process."""
        folder = os.environ.get(SHARED_ENV)
        if not folder:
            return None
        return cls(Path(folder), int(os.environ.get(WORKERS_ENV, "1")))

    def want(self, run: Path) -> str:
        """Ask every worker to serve ``run``; the token names this reload."""
        token = uuid.uuid4().hex
        _write(self.wanted_file, {"token": token, "run": str(run)})
        return token

    def wanted(self) -> Wanted | None:
        """The last reload asked for (a small file read: cheap at two a second; its
        mtime alone would miss a second reload within the clock's tick)."""
        try:
            got = json.loads(self.wanted_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return Wanted(got["token"], Path(got["run"]))

    def answer(self, token: str, served: str | None, error: str | None = None) -> None:
        """This worker's answer to a reload: the run it serves now, or what went wrong."""
        answer = {"token": token, "served": served, "error": error}
        _write(self.folder / f"served-{os.getpid()}.json", answer)

    def answers(self, token: str) -> dict[str, dict]:
        """The answers to one reload, by worker pid, of the workers alive: one that
        answered and died, and the worker started in its place, count once."""
        out = {}
        for path in self.folder.glob("served-*.json"):
            if not psutil.pid_exists(int(path.stem.removeprefix("served-"))):
                continue
            try:
                got = json.loads(path.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                continue
            if got["token"] == token:
                out[path.stem.removeprefix("served-")] = got
        return out

    def wait_for_all(self, token: str, timeout_s: float = WAIT_S) -> dict[str, dict]:
        """The answers of every worker to a reload: all of them, or those that came in
        ``timeout_s``, or before a later reload superseded this one (no worker answers a
        reload that is no longer wanted)."""
        deadline = time.monotonic() + timeout_s
        while len(got := self.answers(token)) < self.workers and time.monotonic() < deadline:
            if self.superseded(token):
                break
            time.sleep(0.05)
        return got

    def superseded(self, token: str) -> Wanted | None:
        """The later reload wanted instead of ``token``'s, if one is."""
        wanted = self.wanted()
        return wanted if wanted is not None and wanted.token != token else None


def _write(path: Path, content: dict) -> None:
    """Whole or not at all: a reader never sees half a file."""
    part = path.with_name(f".{path.name}.{os.getpid()}")
    part.write_text(json.dumps(content))
    os.replace(part, path)
