"""The match as an HTTP service: FastAPI on uvicorn, the model of a run folder, online
features from Redis read the way 06 reads them (``matching.Matcher``).

    python -m ridematch_nb serve [--params P] [--host H] [--port N] [--run RUN] [--workers N]

``POST /match`` takes the original project's request (``rider_id``, ``rider_lat``,
``rider_lon``, ``top_k``) and answers its shape (``{"matches": [{"driver_id", "score",
"distance_km"}]}``); ours adds optional ``dest_lat``/``dest_lon``, ``timestamp`` and
``radius_km`` and, with ``?explain=true``, the pickup, the model's run and the time of
each part. ``GET /health`` (alive), ``GET /ready`` (Redis answers with our credentials, a
model is loaded, the online values are younger than their views' TTL; 503 naming what is
not), ``GET /metrics`` (Prometheus text, feature drift included), ``POST /admin/reload``
(another run's model without a restart, in every worker; needs the admin token). A
wrong body gets a 422 that names the field; Redis down gets a 503 that names Redis, and
the next request tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis
from fastapi import FastAPI, Header, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from ridematch_nb.config import ADMIN_TOKEN_KEY, ConfigError, Settings, resolve_path
from ridematch_nb.contract.events import LAT_RANGE, LON_RANGE
from ridematch_nb.features.redis_io import RedisUnavailable, check_redis
from ridematch_nb.model import drift, matching, training
from ridematch_nb.model.replicas import POLL_S, Replicas
from ridematch_nb.model.service_metrics import Metrics, TimedApp
from ridematch_nb.runs import model_folder, newest_run


def _lat(**kw):
    return Field(ge=LAT_RANGE[0], le=LAT_RANGE[1], strict=True, **kw)


def _lon(**kw):
    return Field(ge=LON_RANGE[0], le=LON_RANGE[1], strict=True, **kw)


# what a Redis that went away raises, wherever the service reads it
REDIS_DOWN = (RedisUnavailable, redis.ConnectionError, redis.TimeoutError)


class MatchRequest(BaseModel):
    """The original's request, plus optional fields of ours; places must be in the city."""

    model_config = ConfigDict(extra="ignore")  # a client may send more than we read

    rider_id: str = Field(min_length=1, max_length=200, strict=True)
    rider_lat: float = _lat()
    rider_lon: float = _lon()
    top_k: int = Field(5, ge=1, le=50, strict=True)
    dest_lat: float | None = _lat(default=None)
    dest_lon: float | None = _lon(default=None)
    timestamp: AwareDatetime | None = None  # a time without its offset: a 422, not a guess
    radius_km: float | None = Field(None, gt=0, le=20, strict=True)  # default: the matcher's


def request_body(request: dict, top_k: int = 5, radius_km: float | None = None) -> dict:
    """A rider request of the lake as ``POST /match`` takes it (the notebook, the bench
    and the tests send these)."""
    body = {
        "rider_id": request["rider_id"],
        "rider_lat": request["origin_lat"],
        "rider_lon": request["origin_lon"],
        "top_k": top_k,
        "dest_lat": request["dest_lat"],
        "dest_lon": request["dest_lon"],
        "timestamp": request["timestamp"].isoformat(),
    }
    if radius_km is not None:
        body["radius_km"] = radius_km
    return body


class ReloadRequest(BaseModel):
    """``POST /admin/reload``: the run folder whose model to serve (default: the newest)."""

    run: str | None = Field(None, min_length=1, max_length=1000)


@dataclass(frozen=True)
class Served:
    """One run's model as the service serves it. A reload swaps it whole: a request
    takes it once, so one in flight ends on the model it began with."""

    run: Path
    trained: training.TrainedModel
    matcher: matching.Matcher
    drift: drift.DriftWindow | None


class MatchService:
    """The served model and the metrics: what the endpoints use. One of the workers of
    a ``serve --workers N`` starts on the run the others serve now (``replicas``)."""

    def __init__(self, settings: Settings, run: Path | None = None) -> None:
        from ridematch_nb.features import store as features

        self.settings = settings
        self.fs = features.store(settings)
        self.replicas = Replicas.from_env()
        wanted = self.replicas.wanted() if self.replicas else None
        self.applied = wanted.token if wanted else None  # the last reload this one did
        self.served = self.load(wanted.run if wanted else run or newest_run())
        if wanted:  # restarted during a reload: the worker that waits counts this one too
            self.replicas.answer(wanted.token, self.served.run.name)
        self.metrics = Metrics(lambda: self.served.drift, self.replicas is not None)
        self._swapping = asyncio.Lock()  # one load-and-swap at a time in this worker

    def load(self, run: Path) -> Served:
        folder = model_folder(run)
        if not (folder / "model_card.json").is_file():
            raise ConfigError(f"no model in {folder}: run notebook 05 (make demo) first")
        trained = training.load(folder, self.fs)
        trained.flat_trees()  # here, not on the event loop in the first request
        matcher = matching.Matcher(self.settings, self.fs, trained, self.fs.project)
        reference = drift.load_reference(folder)
        window = None if reference is None else drift.DriftWindow(reference, trained.features)
        return Served(run, trained, matcher, window)

    def reload(self, run: Path) -> dict:
        """Serve another run's model, loaded beside the one in use and swapped in once
        whole."""
        previous = self.served.run.name
        self.fs.refresh_registry()  # the new run may have applied the repo again
        self.served = self.load(run)
        return {"model_version": run.name, "previous": previous}

    async def reload_all(self, run: Path | None) -> JSONResponse | dict:
        """Reload here (default: the newest run), off the loop (requests go on being
        answered by the old model), then, with other workers, have each of them do the
        same and wait for them all. The lock holds this worker's load-and-swap and its
        word to the others together: a reload another worker asked for meanwhile is
        applied after this one, never over it with an older run."""
        run = run or newest_run()
        async with self._swapping:
            reloaded = await run_in_threadpool(self.reload, run)
            if self.replicas is None:
                return reloaded
            self.applied = self.replicas.want(run)
            self.replicas.answer(self.applied, run.name)
        answers = await run_in_threadpool(self.replicas.wait_for_all, self.applied)
        reloaded["workers"] = {pid: a["served"] or a["error"] for pid, a in answers.items()}
        failed = [a["error"] for a in answers.values() if a["error"]]
        later = self.replicas.superseded(self.applied)
        if later and len(answers) < self.replicas.workers and not failed:
            detail = (
                f"superseded by a later reload (of {later.run.name}) before every worker answered"
            )
            return JSONResponse({"detail": detail, **reloaded}, status_code=409)
        if failed or len(answers) < self.replicas.workers:
            said = f"{len(answers)} of {self.replicas.workers} workers answered"
            detail = f"model reloaded in some workers only ({said}): {'; '.join(failed)}"
            return JSONResponse({"detail": detail, **reloaded}, status_code=503)
        return reloaded

    async def follow_reloads(self) -> None:
        """Forever: when another worker took a reload, load the same run and say so. The
        wanted run is read under the lock, so a reload superseded while this worker
        waited for it is skipped."""
        while True:
            await asyncio.sleep(POLL_S)
            async with self._swapping:
                wanted = self.replicas.wanted()
                if wanted is None or wanted.token == self.applied:
                    continue
                self.applied = wanted.token
                try:
                    await run_in_threadpool(self.reload, wanted.run)
                except Exception as exc:  # said to the worker that waits; the loop goes on
                    self.replicas.answer(wanted.token, None, f"{type(exc).__name__}: {exc}")
                else:
                    self.replicas.answer(wanted.token, wanted.run.name)

    def match(self, body: MatchRequest, explain: bool) -> dict:
        at = body.timestamp or datetime.now(UTC)
        request = {
            "request_id": body.rider_id,
            "origin_lat": body.rider_lat,
            "origin_lon": body.rider_lon,
            "dest_lat": body.dest_lat if body.dest_lat is not None else body.rider_lat,
            "dest_lon": body.dest_lon if body.dest_lon is not None else body.rider_lon,
            "timestamp": at,
            "radius_km": body.radius_km,
        }
        served = self.served
        found = served.matcher.match(request)
        self._observe(found, served.drift)
        top = {c: found.best_first[c][: body.top_k] for c in ("driver_id", "score", "pickup_km")}
        matches = [
            {"driver_id": str(d), "score": round(float(s), 6), "distance_km": round(float(k), 4)}
            for d, s, k in zip(top["driver_id"], top["score"], top["pickup_km"], strict=True)
        ]
        out: dict = {"matches": matches}
        if not matches:
            out["reason"] = (
                "no idle driver with online features within "
                f"{body.radius_km or served.matcher.radius_km:g} km"
            )
        if explain:
            for m in matches:
                m["pickup_km"] = m["distance_km"]
            out["model_version"] = served.run.name
            out["worker"] = os.getpid()
            out["timings_ms"] = {k: round(v, 3) for k, v in found.timings_ms.items()}
            out["skipped_missing"] = found.skipped_missing
        return out

    def _observe(self, found: matching.Match, window: drift.DriftWindow | None) -> None:
        m = self.metrics
        if window is not None:
            window.add(found.features)
        for part in ("candidates", "features", "scoring"):
            m.parts.labels(part).observe(found.timings_ms[part] / 1000)
        m.candidates.observe(found.ranked_count + found.skipped_missing)
        for feature, n in found.missing_by_feature.items():
            if n:
                m.missing.labels(feature).inc(n)
        for score in found.best_first["score"]:
            m.scores.observe(float(score))

    def readiness(self, most: int = 5000) -> tuple[bool, dict]:
        """Redis answers with our credentials, a model is loaded, and each view's newest
        online value among the idle drivers (up to ``most`` of them) is younger than the
        view's TTL: a world simulated in the past is answered, but not ready."""
        served = self.served
        checks = {
            "model": f"{served.run.name} ({served.trained.feature_service})",
            "model_version": served.run.name,
        }
        try:
            check_redis(self.settings)
        except RedisUnavailable as exc:
            return False, {**checks, "redis": str(exc).splitlines()[0]}
        checks["redis"] = f"ok at {self.settings.redis_address}"
        try:
            drivers = served.matcher.redis.zrange(served.matcher.key, 0, most - 1)
            ids = [d.decode() for d in drivers]
            newest = served.matcher.reader.newest_events(ids) if ids else {}
        except REDIS_DOWN as exc:  # gone (or stopped answering) since the check
            return False, {**checks, "redis": f"unreachable: {exc}"}
        if not drivers:
            return False, {**checks, "online": "no idle driver in the index: materialize (04)"}
        now, stale = datetime.now(UTC), []
        for view, at in newest.items():
            ttl = self.fs.get_feature_view(view).ttl
            if at is None or (ttl and now - at > ttl):
                age = "none" if at is None else f"newest {at:%Y-%m-%d %H:%M} UTC"
                stale.append(f"{view} ({age}, TTL {ttl})")
        if stale:
            checks["online"] = "stale: " + "; ".join(stale) + " (push-online keeps it fresh)"
            return False, checks
        checks["online"] = "fresh: " + ", ".join(f"{v} {at:%H:%M:%S}" for v, at in newest.items())
        return True, checks


def create_app(settings: Settings, run: Path | None = None) -> TimedApp:
    """The service's ASGI app (FastAPI inside the timing middleware)."""
    service = MatchService(settings, run)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        follow = service.replicas and asyncio.create_task(service.follow_reloads())
        yield
        if follow:
            follow.cancel()

    app = FastAPI(title="RideMatch match service", version="1", lifespan=lifespan)
    app.state.service = service

    # async, so the match runs on the event loop's thread, where the Matcher limited the
    # model's OpenMP threads to one; in FastAPI's thread pool each request's prediction
    # started OpenMP threads of its own, and at 200 requests/s on 2 cores they spent 85%
    # of the samples in the trees (py-spy) and the service fell behind
    @app.post("/match")
    async def match(body: MatchRequest, explain: bool = Query(False)):
        try:
            return service.match(body, explain)
        except REDIS_DOWN as exc:
            service.metrics.errors.labels("redis").inc()
            where = service.settings.redis_address
            return JSONResponse(
                {"detail": f"Redis (online store) at {where} is not reachable: {exc}"},
                status_code=503,
            )
        except Exception as exc:
            service.metrics.errors.labels(type(exc).__name__).inc()
            raise

    @app.get("/health")
    def health():
        return {"status": "alive"}

    @app.get("/ready")
    def ready():
        ok, checks = service.readiness()
        return JSONResponse({"ready": ok, **checks}, status_code=200 if ok else 503)

    # async: the drift window is read on the loop's thread, where matches add to it
    @app.get("/metrics")
    async def metrics():
        return Response(generate_latest(service.metrics.exposed), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload")
    async def reload(body: ReloadRequest | None = None, authorization: str = Header("")):
        refused = admin_refusal(settings, authorization)
        if refused:
            return refused
        run = resolve_path(body.run) if body and body.run else None
        try:
            return await service.reload_all(run)
        except (ConfigError, training.ModelMismatch, OSError) as exc:
            return JSONResponse({"detail": f"model not reloaded: {exc}"}, status_code=409)

    @app.exception_handler(RequestValidationError)
    async def bad_input(request, exc):
        """422 naming each wrong field; what was sent is left out of the answer (it may
        not even be valid JSON out: NaN, Infinity)."""
        service.metrics.errors.labels("bad_request").inc()
        keep = ("loc", "msg", "type")
        detail = [{k: e[k] for k in keep if k in e} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    return TimedApp(app, service.metrics.latency, {route.path for route in app.routes})


def admin_refusal(settings: Settings, authorization: str) -> JSONResponse | None:
    """None when ``Authorization: Bearer <token>`` holds the admin token, else the
    answer: 503 when no token is configured, 401 when it is absent or wrong."""
    if not settings.admin_token:
        return JSONResponse(
            {
                "detail": f"no admin token configured: `make stack-up` writes {ADMIN_TOKEN_KEY} "
                f"into {settings.secrets_file}, or set {ADMIN_TOKEN_KEY}"
            },
            status_code=503,
        )
    scheme, _, given = authorization.partition(" ")
    expected = settings.admin_token.encode()
    if scheme != "Bearer" or not secrets.compare_digest(given.strip().encode(), expected):
        return JSONResponse(
            {"detail": f"admin call needs Authorization: Bearer <{ADMIN_TOKEN_KEY}>"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    return None
