"""The embedded local stack: SeaweedFS (S3), Tansu (Kafka protocol) and Redis.

Real servers from pip and OS packages, bound to 127.0.0.1 only, their data under
the profile's git-ignored ``stack.data_dir``. ``up`` is idempotent, ``down``
stops only the processes this module started (by recorded PID and command),
``status`` reports each service's endpoint, health and memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from ridematch_nb.config import ConfigError, Settings
from ridematch_nb.ports import port_is_free
from ridematch_nb.stack.services import (
    INSTALL_FIXES,
    LOOPBACK,
    Service,
    definitions,
    ensure_secrets,
)

log = logging.getLogger(__name__)


class StackError(RuntimeError):
    """A service of the local stack cannot start or is unhealthy; says which, where, and the fix."""

    def __init__(self, service: str, port: int | None, problem: str, fix: str) -> None:
        where = f" on {LOOPBACK}:{port}" if port else ""
        super().__init__(f"{service}{where}: {problem}\n  fix: {fix}")
        self.service, self.port, self.problem, self.fix = service, port, problem, fix


@dataclass
class ServiceStatus:
    """What `status` and `up` report for one service."""

    name: str
    endpoint: str
    running: bool
    healthy: bool
    pid: int | None = None
    detail: str = ""
    reused: bool = False
    seconds_to_healthy: float | None = None
    rss_mb: float | None = None

    def line(self) -> str:
        state = "healthy" if self.healthy else ("UNHEALTHY" if self.running else "stopped")
        extra = [f"pid {self.pid}"] if self.pid else []
        if self.rss_mb is not None:
            extra.append(f"{self.rss_mb:.0f} MiB")
        if self.reused:
            extra.append("already running, reused")
        elif self.seconds_to_healthy is not None:
            extra.append(f"healthy in {self.seconds_to_healthy:.1f} s")
        if self.detail:
            extra.append(self.detail)
        return f"{self.name:<6} {self.endpoint:<32} {state:<9} {', '.join(extra)}"


def port_holder(port: int) -> str:
    """Best-effort name of the process listening on a port, for error messages."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
                proc = psutil.Process(conn.pid)
                return f"{proc.name()} (pid {conn.pid})"
    return "another process"


class LocalStack:
    """Start, check and stop the three servers of one profile's embedded stack."""

    def __init__(self, settings: Settings) -> None:
        if settings.stack is None:
            raise ConfigError(
                f"{settings.params_file} has no 'stack' section: it points at servers "
                "run elsewhere (for example docker compose), not the embedded stack"
            )
        for name, url in (
            ("services.kafka_bootstrap", settings.kafka_bootstrap),
            ("services.s3_endpoint", settings.s3_endpoint),
            ("services.redis_url", settings.redis_url),
        ):
            if LOOPBACK not in url:
                raise ConfigError(f"{settings.params_file}: {name} must be on {LOOPBACK}: {url}")
        self.settings = settings
        self.cfg = settings.stack
        self.dir = settings.stack.data_dir
        self.state_file = self.dir / "state.json"

    # ---- services --------------------------------------------------------------------

    # ---- state -----------------------------------------------------------------------

    def _state(self) -> dict[str, dict]:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _save_state(self, state: dict[str, dict]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    def _process(self, name: str) -> psutil.Process | None:
        """The recorded process of a service, if it is still the one we started."""
        entry = self._state().get(name)
        if not entry:
            return None
        try:
            proc = psutil.Process(entry["pid"])
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            if abs(proc.create_time() - entry["create_time"]) > 1.0:
                return None  # the PID was reused by something else
            return proc
        except (psutil.Error, KeyError):
            return None

    def pids(self) -> dict[str, int]:
        return {n: p.pid for n in ("s3", "kafka", "redis") if (p := self._process(n))}

    # ---- operations ------------------------------------------------------------------

    def _healthy(self, svc: Service) -> tuple[bool, str]:
        try:
            svc.check()
            return True, ""
        except Exception as exc:  # any failure of the probe means "not healthy yet"
            return False, f"{type(exc).__name__}: {exc}".splitlines()[0][:160]

    def _preflight(self, svc: Service) -> None:
        """Fail before starting anything when a binary is missing or a port is taken."""
        binary = svc.command[0]
        if not binary or not Path(binary).is_file():
            raise StackError(svc.name, svc.port, "server binary not found", INSTALL_FIXES[svc.name])
        busy = [p for p in svc.ports if not port_is_free(p)]
        if busy:
            raise StackError(
                svc.name,
                busy[0],
                f"port is already in use by {port_holder(busy[0])}",
                f"stop that process, or choose other ports in {self.settings.params_file}",
            )

    def _start(self, svc: Service) -> ServiceStatus:
        self._preflight(svc)
        for sub in ("s3", "redis", "logs"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        svc.prepare()
        logfile = self.dir / "logs" / f"{svc.name}.log"
        t0 = time.monotonic()
        with open(logfile, "ab") as out:
            proc = subprocess.Popen(
                svc.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **svc.env},
                cwd=self.dir,
                start_new_session=True,
            )
        state = self._state()
        state[svc.name] = {
            "pid": proc.pid,
            "create_time": psutil.Process(proc.pid).create_time(),
            "command": svc.command[0],
        }
        self._save_state(state)
        deadline = t0 + self.cfg.startup_timeout_s
        reason = ""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = logfile.read_text(errors="replace").splitlines()[-5:]
                raise StackError(
                    svc.name,
                    svc.port,
                    f"server exited with code {proc.returncode}: " + " | ".join(tail),
                    f"read {logfile}",
                )
            ok, reason = self._healthy(svc)
            if ok:
                svc.after_healthy()
                took = time.monotonic() - t0
                log.debug("%s healthy in %.1f s", svc.name, took)
                return ServiceStatus(
                    svc.name, svc.endpoint, True, True, proc.pid, seconds_to_healthy=took
                )
            time.sleep(0.25)
        self._stop_pid(svc.name)
        raise StackError(
            svc.name,
            svc.port,
            f"not healthy after {self.cfg.startup_timeout_s:.0f} s ({reason})",
            f"read {logfile}; raise stack.startup_timeout_s in {self.settings.params_file}",
        )

    def up(self) -> list[ServiceStatus]:
        """Start every service that is not already running and healthy.

        All ports of the services to start are checked first, so a busy port
        fails the whole `up` before any server is started.
        """
        self.settings = ensure_secrets(self.settings)
        results: dict[str, ServiceStatus] = {}
        to_start = []
        for svc in definitions(self.settings):
            proc = self._process(svc.name)
            if proc is not None:
                ok, reason = self._healthy(svc)
                if ok:
                    results[svc.name] = ServiceStatus(
                        svc.name, svc.endpoint, True, True, proc.pid, reused=True
                    )
                    continue
                log.warning("%s (pid %s) is unhealthy (%s); restarting", svc.name, proc.pid, reason)
                self._stop_pid(svc.name)
            to_start.append(svc)
        for svc in to_start:
            self._preflight(svc)
        for svc in definitions(self.settings):
            if svc.name in results:
                svc.after_healthy()
            else:
                results[svc.name] = self._start(svc)
        return list(results.values())

    def status(self) -> list[ServiceStatus]:
        """Each service's endpoint, whether its recorded process runs, health and memory."""
        if self.settings.secrets_file and self.settings.secrets_file.exists():
            self.settings = ensure_secrets(self.settings)
        services = definitions(self.settings) if self.settings.aws_access_key_id else self._bare()
        out = []
        for svc in services:
            proc = self._process(svc.name)
            ok, reason = self._healthy(svc) if proc else (False, "")
            rss = proc.memory_info().rss / 2**20 if proc else None
            out.append(
                ServiceStatus(
                    svc.name,
                    svc.endpoint,
                    proc is not None,
                    ok,
                    proc.pid if proc else None,
                    reason,
                    rss_mb=rss,
                )
            )
        return out

    def _bare(self) -> list[Service]:
        """Services described without keys (status before the first `up`)."""
        s = self.settings
        never: Callable[[], None] = lambda: None  # noqa: E731
        return [
            Service("s3", s.s3_port, [], s.s3_endpoint, [], never),
            Service("kafka", s.kafka_port, [], s.kafka_bootstrap, [], never),
            Service("redis", s.redis_port, [], s.redis_address, [], never),
        ]

    def _stop_pid(self, name: str, timeout_s: float = 15.0) -> bool:
        proc = self._process(name)
        state = self._state()
        state.pop(name, None)
        self._save_state(state)
        if proc is None:
            return False
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except psutil.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return True

    def stop(self, name: str) -> bool:
        """Stop one service (tests use this to restart the broker or take S3 away)."""
        return self._stop_pid(name)

    def start(self, name: str) -> ServiceStatus:
        self.settings = ensure_secrets(self.settings)
        svc = next(s for s in definitions(self.settings) if s.name == name)
        return self._start(svc)

    def restart(self, name: str) -> ServiceStatus:
        self.stop(name)
        return self.start(name)

    def down(self) -> list[str]:
        """Stop the services this stack started, broker first; returns what was stopped."""
        return [n for n in ("kafka", "redis", "s3") if self._stop_pid(n)]

    def listening_addresses(self) -> dict[str, set[str]]:
        """Every address each stack process listens on (for the loopback-only check)."""
        out: dict[str, set[str]] = {}
        for name, pid in self.pids().items():
            conns = psutil.Process(pid).net_connections(kind="inet")
            out[name] = {
                f"{c.laddr.ip}:{c.laddr.port}" for c in conns if c.status == psutil.CONN_LISTEN
            }
        return out
