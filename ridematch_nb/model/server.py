"""Running the match service (``service.create_app``) until Ctrl+C: in this process, or
in N worker processes that uvicorn starts, which share a folder (``replicas``).

    python -m ridematch_nb serve [--params P] [--host H] [--port N] [--run RUN] [--workers N]
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ridematch_nb.config import Settings
from ridematch_nb.model.replicas import METRICS_ENV, SHARED_ENV, WORKERS_ENV
from ridematch_nb.model.service import create_app
from ridematch_nb.model.service_metrics import TimedApp
from ridematch_nb.runs import newest_run

# What ``serve --workers N`` hands each worker process (uvicorn starts them from an
# import string): the profile and the run folder, set by the command for its children.
SERVE_RUN_ENV = "RIDEMATCH_SERVE_RUN"


def app_from_env() -> TimedApp:
    """The app of one of several worker processes: the profile from RIDEMATCH_PARAMS and
    the run folder from RIDEMATCH_SERVE_RUN, as ``serve`` set them."""
    from ridematch_nb.config import load_settings

    settings = load_settings(os.environ.get("RIDEMATCH_PARAMS"))
    return create_app(settings, Path(os.environ[SERVE_RUN_ENV]))


def serve(
    settings: Settings,
    run: Path | None,
    host: str | None = None,
    port: int | None = None,
    workers: int = 1,
) -> None:
    """Run the service until Ctrl+C (at ``services.match_url`` unless told otherwise): in
    this process, or in ``workers`` processes that uvicorn starts from an import string.
    Those read the profile, the run and their shared folder (``replicas``) from their
    environment, so this command starts itself again once with them in it rather than
    write its own environment."""
    import uvicorn

    from ridematch_nb.process import start_again_with

    if host is None or port is None:
        default_host, default_port = settings.match_address
        host, port = host or default_host, port or default_port
    run = run or newest_run()
    if workers > 1:
        shared = os.environ.get(SHARED_ENV) or tempfile.mkdtemp(prefix="ridematch-serve-")
        start_again_with(
            {
                "RIDEMATCH_PARAMS": str(settings.params_file),
                SERVE_RUN_ENV: str(run),
                SHARED_ENV: shared,
                WORKERS_ENV: str(workers),
                METRICS_ENV: str(Path(shared) / "metrics"),
            }
        )
    url = f"http://{host}:{port}"
    print(f"serving the model of {run.name} at {url}/match, {workers} worker(s); Ctrl+C stops")
    options = {"host": host, "port": port, "log_level": "warning"}
    if workers == 1:
        uvicorn.run(create_app(settings, run), **options)
        return
    shutil.rmtree(shared, ignore_errors=True)  # nothing of an earlier serve in it
    (Path(shared) / "metrics").mkdir(parents=True)
    try:
        uvicorn.run(f"{__name__}:app_from_env", factory=True, workers=workers, **options)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
