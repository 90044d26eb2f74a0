"""The match service as a notebook calls it: the one at ``services.match_url`` when it
serves the notebook's run, else one the notebook starts (``python -m ridematch_nb
serve``, tied to the kernel like the live view's processes) and stops when done.

    service = service_client.connect(settings, run)
    answer = service.match(request, top_k=5)  # the service's JSON, ?explain=true
    service.close()  # stops the service only if this started it
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from ridematch_nb.config import Settings
from ridematch_nb.model.service import request_body
from ridematch_nb.ports import free_port, port_is_free
from ridematch_nb.process import wait_until_answering
from ridematch_nb.views.live import Background

START_TIMEOUT_S = 120.0


def served_run(url: str) -> str | None:
    """The run whose model the service at ``url`` serves; None when nothing answers."""
    try:
        return httpx.get(f"{url}/ready", timeout=5).json().get("model_version")
    except (httpx.TransportError, ValueError):
        return None


class ServiceClient:
    """Calls to one match service over HTTP (one connection, kept alive)."""

    def __init__(self, url: str, started: Background | None, note: str) -> None:
        self.url, self.started, self.note = url, started, note
        self.http = httpx.Client(base_url=url, timeout=30)

    def match(self, request: dict, top_k: int = 5, radius_km: float | None = None) -> dict:
        """``POST /match?explain=true`` for a lake request, plus ``http_ms``: the round
        trip as this client saw it."""
        t0 = time.perf_counter()
        reply = self.http.post(
            "/match", params={"explain": "true"}, json=request_body(request, top_k, radius_km)
        )
        took = (time.perf_counter() - t0) * 1e3
        if reply.status_code != 200:
            raise RuntimeError(f"POST {self.url}/match answered {reply.status_code}: {reply.text}")
        return {**reply.json(), "http_ms": took}

    def close(self) -> None:
        self.http.close()
        if self.started is not None:
            self.started.close()


def connect(settings: Settings, run: Path, log_dir: Path | None = None) -> ServiceClient:
    """The service serving ``run``'s model: the profile's if it does, else one started
    here (at the profile's address when free, else on a free port)."""
    url = settings.match_url
    found = served_run(url)
    if found == run.name:
        return ServiceClient(url, None, f"using the running service (model of {found})")
    _, port = settings.match_address
    if found is not None or not port_is_free(port):
        port = free_port()  # the profile's port serves something else: leave it be
    background = Background(settings, log_dir or run / "logs")
    background.start("serve", "--run", str(run), "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(
            lambda: served_run(url) == run.name,
            background.procs["serve"].popen.poll,
            f"the match service at {url}",
            lambda: " | ".join(background.tail("serve", 8)),
            START_TIMEOUT_S,
        )
    except RuntimeError:
        background.close()
        raise
    why = "" if found is None else f" (the profile's serves {found})"
    return ServiceClient(url, background, f"started a service for {run.name}{why}")
