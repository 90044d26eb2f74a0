"""The notebook chain: discover the stage notebooks, run them in order with papermill
into ``outputs/runs/<run-id>/``, and keep what each one recorded."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ridematch_nb.config import PROJECT_ROOT, ConfigError, load_settings
from ridematch_nb.model.dispatch import POLICIES
from ridematch_nb.runs import RUNS_DIR, new_run_id, run_folder

log = logging.getLogger(__name__)

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
# Parameters every stage notebook takes; the runner fills them in.
COMMON_PARAMS = ("params_file", "run_dir")


class ChainError(RuntimeError):
    """A notebook of the chain failed; the message has the failing cell's error."""


def discover(notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The stage notebooks, in order: ``NN_name.ipynb``."""
    return sorted(notebook_dir.glob("[0-9][0-9]_*.ipynb"))


def notebook_parameters(path: Path) -> dict[str, Any]:
    import papermill

    return papermill.inspect_notebook(str(path))


@dataclass
class ChainResult:
    run_dir: Path
    timings: dict[str, float] = field(default_factory=dict)
    figures: dict[str, dict] = field(default_factory=dict)
    peak_mib: dict[str, float] = field(default_factory=dict)


class PeakMemory:
    """Peak memory of this process's children (a notebook's kernel and whatever it
    starts), sampled every 0.2 s on a thread: proportional set size, so pages a forked
    child shares with its parent count once."""

    def __init__(self) -> None:
        import threading

        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.wait(0.2):
            total = 0
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):  # a child that just ended
                    total += child.memory_full_info().pss
            self.peak = max(self.peak, total)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mib(self) -> float:
        return round(self.peak / 2**20, 1)


def _check_params(nb: Path, given: dict[str, Any]) -> None:
    known = notebook_parameters(nb)
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ConfigError(
            f"{nb.name} has no parameter(s) {', '.join(unknown)}; "
            f"it takes {', '.join(sorted(known))}"
        )


def _failure(nb: Path, out: Path, exc: Exception) -> ChainError:
    cell = getattr(exc, "exec_count", None)
    name, value = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
    where = f"cell [{cell}]" if cell else "a cell"
    return ChainError(
        f"{nb.stem} failed in {where}: {name}: {value}\n"
        f"  executed notebook with the full traceback: {out}"
    )


def run_chain(
    params_file: str | Path = "params/local.yaml",
    only: list[str] | None = None,
    run_dir: str | Path | None = None,
    say=print,
) -> ChainResult:
    """Run the stage notebooks in order; stop at the first failure with its error."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    settings = load_settings(params_file)
    notebooks = discover()
    if only:
        wanted = set(only)
        notebooks = [nb for nb in notebooks if nb.stem in wanted or nb.stem[:2] in wanted]
        missing = wanted - {nb.stem for nb in notebooks} - {nb.stem[:2] for nb in notebooks}
        if missing:
            raise ConfigError(
                f"--only: no notebook named {', '.join(sorted(missing))}; "
                f"have {', '.join(nb.stem for nb in discover())}"
            )
    folder = run_folder(run_dir or RUNS_DIR / new_run_id())
    result = ChainResult(folder)
    plan = {}
    for nb in notebooks:
        given = dict(settings.notebooks.get(nb.stem) or {})
        _check_params(nb, given)
        plan[nb.stem] = {**given, "params_file": str(settings.params_file), "run_dir": str(folder)}
    (folder / "params.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    say(f"run folder: {folder}")
    for nb in notebooks:
        out = folder / nb.name
        say(f"▶ {nb.stem} ...")
        t0 = time.perf_counter()
        try:
            with PeakMemory() as memory:
                papermill.execute_notebook(
                    str(nb),
                    str(out),
                    parameters=plan[nb.stem],
                    kernel_name="python3",
                    cwd=str(PROJECT_ROOT),
                    progress_bar=False,
                    # the kernel's own log (e.g. ipykernel's notice that its loopback TCP
                    # channel is unencrypted) is noise here; cell errors still surface
                    extra_arguments=["--IPKernelApp.log_level=ERROR"],
                )
        except PapermillExecutionError as exc:
            result.timings[nb.stem] = round(time.perf_counter() - t0, 2)
            result.peak_mib[nb.stem] = memory.mib
            _write_timings(folder, result)
            raise _failure(nb, out, exc) from None
        result.timings[nb.stem] = round(time.perf_counter() - t0, 2)
        result.peak_mib[nb.stem] = memory.mib
        say(f"  done in {result.timings[nb.stem]:.1f} s, peak memory {memory.mib:,.0f} MiB")
        record_file = folder / f"{nb.stem}.json"
        if record_file.exists():
            result.figures[nb.stem] = json.loads(record_file.read_text())
        _write_timings(folder, result)
    return result


def _write_timings(folder: Path, result: ChainResult) -> None:
    (folder / "timings.json").write_text(json.dumps(result.timings, indent=2))
    (folder / "peak_memory_mib.json").write_text(json.dumps(result.peak_mib, indent=2))


def headline(figures: dict[str, Any]) -> dict[str, Any]:
    """The scalar figures worth a line in the summary (nested tables stay in the JSON)."""
    return {
        k: v for k, v in figures.items() if isinstance(v, int | float | str) and len(str(v)) < 40
    }


def _model_block(figures: dict[str, dict]) -> list[str]:
    """The model against its baselines, and the match latency, when those stages ran."""
    lines = []
    metrics = figures.get("05_train", {}).get("metrics")
    if metrics:
        lines += [
            "",
            "Model against the baselines (held-out later period):",
            f"    {'scorer':<16}{'AUC':>8}{'log loss':>10}{'top-1':>8}{'NDCG':>8}",
        ]
        for name, m in metrics.items():
            cells = [m.get(k) for k in ("auc", "log_loss", "top1", "ndcg")]
            text = "".join(f"{v:>8.3f}" if isinstance(v, float) else f"{'-':>8}" for v in cells)
            lines.append(f"    {name:<16}{text[:8]}{text[8:16]:>10}{text[16:]}")
    policies = figures.get("07_dispatch", {}).get("policies")
    if policies:
        seeds = figures["07_dispatch"]["seeds"]
        lines += [
            "",
            f"Dispatch policies (held-out period replayed, mean over {seeds} seeds; "
            "ranked by fulfilled = picked up):",
            f"    {'policy':<12}{'fulfilled':>10}{'cancelled':>10}{'1st-offer':>10}"
            f"{'pickup min':>11}{'pickup km':>10}",
        ]
        ranked = sorted(
            (p for p in POLICIES if p in policies), key=lambda p: -policies[p]["fulfilled"]
        )
        for name in ranked:
            m = policies[name]
            lines.append(
                f"    {name:<12}{m['fulfilled']:>10.3f}{m['cancelled']:>10.3f}"
                f"{m['first_offer_acceptance']:>10.3f}{m['pickup_min']:>11.1f}"
                f"{m['pickup_km']:>10.2f}"
            )
    latency = figures.get("06_match", {}).get("latency_ms")
    if latency:
        lines += ["", "Match latency (ms):       p50      p99"]
        for part, q in latency.items():
            lines.append(f"    {part:<20}{q['p50_ms']:>8.2f} {q['p99_ms']:>8.2f}")
    return lines


def summary_text(result: ChainResult) -> str:
    lines = [f"Run folder: {result.run_dir}", ""]
    for stem, seconds in result.timings.items():
        lines.append(f"{stem}  ({seconds:.1f} s)")
        for key, value in headline(result.figures.get(stem, {})).items():
            lines.append(f"    {key:<28} {value}")
    lines += _model_block(result.figures)
    figures = sorted(p.name for p in (result.run_dir / "figures").glob("*.png"))
    lines += ["", f"Figures ({len(figures)}): {result.run_dir / 'figures'}"]
    return "\n".join(lines)
