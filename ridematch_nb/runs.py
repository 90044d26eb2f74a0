"""Where a run's outputs go: outputs/runs/<run-id>/ with each notebook's recorded
figures (JSON) and its charts under figures/."""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

from ridematch_nb.config import PROJECT_ROOT, ConfigError, resolve_path

RUNS_DIR = PROJECT_ROOT / "outputs" / "runs"


def new_run_id() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def run_folder(run_dir: str | Path = "") -> Path:
    """The folder a notebook writes to: the given one, or outputs/runs/interactive."""
    path = resolve_path(run_dir) if str(run_dir) else RUNS_DIR / "interactive"
    (path / "figures").mkdir(parents=True, exist_ok=True)
    return path


def model_folder(run_dir: str | Path = "", model_dir: str | Path = "") -> Path:
    """Where 05_train saved the model that 06 and 07 load: the given folder, else the
    run folder's model/."""
    return resolve_path(model_dir) if str(model_dir) else run_folder(run_dir) / "model"


def record(run_dir: str | Path, notebook: str, figures: dict[str, Any]) -> Path:
    """Write a notebook's key figures as JSON beside its executed copy."""
    path = run_folder(run_dir) / f"{notebook}.json"
    path.write_text(json.dumps(figures, indent=2, sort_keys=True, default=str))
    return path


def load_record(run_dir: str | Path, notebook: str) -> dict[str, Any]:
    return json.loads((resolve_path(run_dir) / f"{notebook}.json").read_text())


def newest_run(runs_dir: Path = RUNS_DIR) -> Path:
    """The newest run folder holding 01's record and 05's model (what the dispatch bench
    replays and the match service serves)."""
    done = [
        p
        for p in runs_dir.glob("*")
        if (p / "01_generate.json").is_file() and (p / "model" / "model_card.json").is_file()
    ]
    if not done:
        raise ConfigError(
            f"no chain run with 01's record and 05's model under {runs_dir}: run make demo"
        )
    return max(done, key=lambda p: p.stat().st_mtime)
