"""The dispatch replay at a size the demo cannot afford: more seeds, longer windows.

    python -m ridematch_nb bench --dispatch [--run <run folder>] [--seeds 10] [--window-hours 0]

Takes a chain run (default: the newest under outputs/runs/ with 01's record and 05's
model), replays its held-out period under each policy as notebook 07 does, prints the
policies table (mean and standard deviation over the seeds) with the time it took, and
writes every run's figures to outputs/bench/<timestamp>-dispatch.json.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

from ridematch_nb.bench.stages import BENCH_DIR, machine
from ridematch_nb.config import Settings
from ridematch_nb.features import store as features
from ridematch_nb.model import dispatch, training
from ridematch_nb.runs import load_record, model_folder, newest_run


def run_dispatch_bench(
    settings: Settings, run: Path | None, seeds: int, window_hours: float
) -> dict:
    run = run or newest_run()
    fs = features.store(settings)
    trained = training.load(model_folder(run), fs)
    plan = dispatch.plan(load_record(run, "01_generate"), trained, seeds, window_hours)
    ttl = fs.get_feature_view("driver_state").ttl.total_seconds()
    t0 = time.perf_counter()
    bound = {"sequence_oracle": dispatch.sequence_oracle}  # what the truth would add
    replay = dispatch.run_replay(plan, trained, ttl, progress=True, extra=bound)
    seconds = time.perf_counter() - t0
    table = dispatch.policy_table(replay.runs)
    print(
        f"run {run.name}: {len(plan.seeds)} seeds x {plan.window_s / 3600:.2f} h, {seconds:.0f} s"
    )
    print(table[dispatch.METRICS].sort_values("fulfilled", ascending=False).round(3).to_string())
    fitted = replay.weights
    print(f"weights w fitted on the training period (riders wait with chance exp(-w km)): {fitted}")
    best = dispatch.best_heuristic(table)
    margin = table.at["model", "fulfilled"] - table.at[best, "fulfilled"]
    print(f"model against the best simple rule ({best}) on fulfilled: {margin:+.4f}")
    results = {
        "machine": machine(),
        "run": str(run),
        "seeds": plan.seeds,
        "hours_replayed": plan.window_s / 3600,
        "seconds": round(seconds, 1),
        "weights": replay.weights,
        "best_heuristic": best,
        "model_minus_best_heuristic_fulfilled": margin,
        "policies": table.to_dict(orient="index"),
        "runs": replay.runs.to_dict(orient="records"),
        "fit": replay.fit.to_dict(orient="records"),
    }
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    path = BENCH_DIR / f"{datetime.now():%Y%m%d-%H%M%S}-dispatch.json"
    path.write_text(json.dumps(results, indent=2, default=float))
    return {**results, "path": path}
