"""JupyterLab as ``make lab`` starts it, in one place, so the browser tests open the very
same configuration: the project's ``.venv`` kernel, 127.0.0.1 only, token auth."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ridematch_nb.config import PROJECT_ROOT


def lab_command(
    root_dir: str | Path = PROJECT_ROOT,
    port: int | None = None,
    token: str | None = None,
    open_browser: bool = True,
) -> list[str]:
    """The ``jupyter lab`` command line: bound to 127.0.0.1, token auth (Jupyter makes a
    token when none is given), ``--allow-root`` when run as root (as in containers)."""
    argv = [
        str(Path(sys.executable).with_name("jupyter")),
        "lab",
        "--ip=127.0.0.1",
        f"--ServerApp.root_dir={root_dir}",
    ]
    if port is not None:
        argv.append(f"--port={port}")
    if token is not None:
        argv.append(f"--IdentityProvider.token={token}")
    if not open_browser:
        argv.append("--no-browser")
    if os.geteuid() == 0:
        argv.append("--allow-root")
    return argv


if __name__ == "__main__":
    cmd = lab_command()
    os.execv(cmd[0], cmd)
