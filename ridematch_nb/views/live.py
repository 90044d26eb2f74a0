"""The live notebook's background processes: the realtime generator, the ETL follow
worker and ``push-online``, started from a kernel and never left behind.

Each process is the package's own command (``python -m ridematch_nb --tied-to PID
generate ...``); ``--tied-to`` makes it tie its life to the kernel's first:

- a normal stop sends SIGINT (every command then flushes, writes and commits what it
  holds), then SIGTERM, then SIGKILL, each after a grace period;
- the kernel shutting down or restarting runs the same stop from ``atexit``;
- the kernel dying without clean-up (SIGKILL, a crash) kills the children through
  Linux's ``PR_SET_PDEATHSIG``, as the ETL's writer process does;
- Kernel > Interrupt in JupyterLab signals the kernel's whole process group, which
  the children belong to: they stop as on Ctrl+C.

``PR_SET_PDEATHSIG`` fires when the *thread* that started a child ends, so children are
started from one daemon thread that lives as long as the process: not from a button's
callback thread, and not from a thread pool (Python joins pool threads at exit before
the ``atexit`` hooks run, which would kill the children before the gentle stop).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from queue import SimpleQueue

from ridematch_nb.config import Settings

# What each background process runs: the package's own commands, in follow/realtime mode.
COMMANDS: dict[str, list[str]] = {
    "generator": ["generate", "--mode", "realtime"],
    "etl": ["etl", "--mode", "follow"],
    "push": ["push-online", "--mode", "follow"],
    "serve": ["serve"],  # the match service, for 06 (views.service_client)
}
# Grace periods of a stop: SIGINT (flush and commit), then SIGTERM, then SIGKILL.
STOP_GRACE_S = (8.0, 3.0)


@dataclass
class Proc:
    """One background process and where its output goes."""

    name: str
    popen: subprocess.Popen
    log: Path
    interrupted: bool = False  # a second SIGINT would cut short the flush the first began

    def interrupt(self) -> None:
        if not self.interrupted and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGINT)
        self.interrupted = True

    @property
    def pid(self) -> int:
        return self.popen.pid

    def state(self) -> str:
        code = self.popen.poll()
        return "running" if code is None else f"exited {code}"


def child_env(settings: Settings) -> dict[str, str]:
    """The kernel's environment plus the names the notebook watches, so every child works
    on the same topic and data prefix as the charts (the kernel's own environment is not
    changed)."""
    env = dict(os.environ)
    env["RIDEMATCH_TOPIC"] = settings.topic
    env["RIDEMATCH_PREFIX"] = settings.prefix
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Background:
    """The processes a notebook owns: start by name, stop one or all, never orphaned."""

    def __init__(self, settings: Settings, log_dir: str | Path) -> None:
        self.settings = settings
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, Proc] = {}
        self._lock = threading.Lock()
        # one thread, alive until the process ends, starts every child (PR_SET_PDEATHSIG)
        self._jobs: SimpleQueue = SimpleQueue()
        threading.Thread(target=self._spawner, name="live-spawner", daemon=True).start()
        atexit.register(self.stop_all)

    def _spawner(self) -> None:
        while True:
            job, done = self._jobs.get()
            try:
                done.set_result(job())
            except BaseException as exc:
                done.set_exception(exc)

    def _spawn(self, job):
        done: Future = Future()
        self._jobs.put((job, done))
        return done.result()

    def argv(self, name: str, *extra: str) -> list[str]:
        if name not in COMMANDS:
            raise ValueError(f"unknown background process {name!r}; one of {sorted(COMMANDS)}")
        params = str(self.settings.params_file)
        cli = [*COMMANDS[name], *extra, "--params", params]
        return [sys.executable, "-m", "ridematch_nb", "--tied-to", str(os.getpid()), *cli]

    def start(self, name: str, *extra: str) -> Proc:
        """Start ``name`` (one of COMMANDS) unless it already runs; returns its process."""
        with self._lock:
            running = self.procs.get(name)
            if running is not None and running.popen.poll() is None:
                return running
            log = self.log_dir / f"{name}.log"
            argv, env = self.argv(name, *extra), child_env(self.settings)

            def spawn() -> subprocess.Popen:
                with open(log, "ab") as out:
                    return subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=env,
                    )

            proc = self.procs[name] = Proc(name, self._spawn(spawn), log)
            return proc

    def stop(self, name: str, grace_s: tuple[float, float] = STOP_GRACE_S) -> int | None:
        """Stop ``name`` gently, then firmly; returns its exit code (None: never started)."""
        proc = self.procs.get(name)
        if proc is None:
            return None
        p = proc.popen
        proc.interrupt()
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(grace_s[0])
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(grace_s[1])
        if p.poll() is None:
            p.kill()
        return p.wait()

    def stop_all(self, grace_s: tuple[float, float] = STOP_GRACE_S) -> dict[str, int | None]:
        """Stop every process, all at once: SIGINT to each, then wait for each."""
        for proc in self.procs.values():
            proc.interrupt()
        return {name: self.stop(name, grace_s) for name in list(self.procs)}

    def states(self) -> dict[str, str]:
        return {name: proc.state() for name, proc in self.procs.items()}

    def pids(self) -> dict[str, int]:
        """The processes still running, by name."""
        return {n: p.pid for n, p in self.procs.items() if p.popen.poll() is None}

    def tail(self, name: str, lines: int = 3) -> list[str]:
        """The last lines a process wrote (its progress, or why it stopped)."""
        proc = self.procs.get(name)
        if proc is None or not proc.log.exists():
            return []
        with open(proc.log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            text = f.read().decode("utf-8", "replace")
        return [line for line in text.replace("\r", "\n").splitlines() if line.strip()][-lines:]

    def close(self) -> dict[str, int | None]:
        codes = self.stop_all()
        atexit.unregister(self.stop_all)
        return codes
