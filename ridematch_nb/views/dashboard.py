"""The live notebook's dashboard: widgets and charts that update in place.

The charts (``live_charts``) are one matplotlib figure on an ipympl canvas (a widget: the image is
redrawn in place, no new output, no flicker). Each refresh moves the data of the same
artists (``set_data``, ``set_offsets``, bar heights) and draws once, so memory stays
flat however long it runs. Everything that touches the figure or the widgets runs on
the kernel's own thread; a thread polls the stream, another measures lag and freshness.

Why not plotly's FigureWidget: it loads a 4 MB script per widget through anywidget,
which gives up after 2 s; on a busy 2-core machine that left charts blank.

The processes belong to ``live.Background``; the numbers to ``watch.Watcher``.
"""

from __future__ import annotations

import html
import logging
import threading
import time
from pathlib import Path

import ipywidgets as widgets

from ridematch_nb.config import ETL_GROUP, PUSH_GROUP, Settings
from ridematch_nb.contract.events import EVENT_TYPES
from ridematch_nb.views.live import Background
from ridematch_nb.views.live_charts import Charts, ServiceCharts
from ridematch_nb.views.service_watch import Forwarder, ServiceWatch
from ridematch_nb.views.watch import HOT_SPOTS, Watcher

log = logging.getLogger(__name__)

WINDOWS = {"30 s": 30, "1 min": 60, "5 min": 300, "10 min": 600}
ALL, CITY = "all", "whole city"  # the unfiltered choices of the event type and area menus
HEALTH_EVERY_S = 2.0  # lag and freshness: an admin round trip and an online read


def _kernel_loop():
    """The running IPython kernel's event loop, or None outside a kernel."""
    try:
        from ipykernel.kernelbase import Kernel
    except ImportError:
        return None
    return Kernel.instance().io_loop if Kernel.initialized() else None


class LiveDashboard:
    """A live view of the marketplace and the processes it starts.

    ``start()`` launches the generator (and, on request, the ETL and the push loop) and
    the refresh thread; ``stop()`` ends them all; ``run_for(s)`` does both around a wait,
    for headless runs. Kernel shutdown and interrupt are handled by ``Background``.
    """

    def __init__(
        self,
        settings: Settings,
        log_dir: str | Path,
        generator_args: tuple[str, ...] = (),
        etl_args: tuple[str, ...] = (),
        push_args: tuple[str, ...] = (),
        serve_args: tuple[str, ...] = (),
        refresh_s: float = 1.0,
        etl_group: str = ETL_GROUP,
        push_group: str = PUSH_GROUP,
    ) -> None:
        if refresh_s <= 0:
            raise ValueError(f"parameter refresh_s={refresh_s!r} must be > 0")
        self.settings, self.refresh_s = settings, refresh_s
        etl_args = (*etl_args, "--group", etl_group)
        push_args = (*push_args, "--group", push_group)
        self.args = {
            "generator": generator_args,
            "etl": etl_args,
            "push": push_args,
            "serve": serve_args,
        }
        self.groups = {"etl": etl_group, "push": push_group}
        self.bg = Background(settings, log_dir)
        self.watcher = Watcher(settings, self.groups)
        # the match service at the profile's address: scraped, and sent the live requests
        self.service = ServiceWatch(settings.match_url) if settings.match_url else None
        self.forwarder: Forwarder | None = None
        self.service_charts: ServiceCharts | None = None
        self._lock = threading.RLock()  # state and figures: the refresh thread vs the controls
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._push_wanted = threading.Event()
        self._refresh_pending = threading.Event()
        self._ioloop = None
        self.problem = ""  # the last error the threads met, shown under the charts
        self.refreshes = 0
        self._applied = False
        self.started_at: float | None = None
        self.peaks: dict[str, float] = {}
        self._build()

    # -- widgets ----------------------------------------------------------------

    def _build(self) -> None:
        self.window = widgets.Dropdown(options=list(WINDOWS), value="1 min", description="window")
        self.event_type = widgets.Dropdown(options=[ALL, *EVENT_TYPES], description="event type")
        self.area = widgets.Dropdown(
            options=[CITY, *sorted(HOT_SPOTS)],
            description="area",
        )
        self.etl_on = widgets.ToggleButton(description="ETL worker", icon="database")
        self.push_on = widgets.ToggleButton(description="push-online", icon="bolt")
        self.serve_on = widgets.ToggleButton(description="match service", icon="server")
        self.stop_button = widgets.Button(description="Stop all", button_style="danger")
        for control in (self.window, self.event_type, self.area):
            control.observe(lambda _: self.refresh(), names="value")
        self.etl_on.observe(lambda c: self._toggle("etl", c["new"]), names="value")
        self.push_on.observe(lambda c: self._toggle("push", c["new"]), names="value")
        self.serve_on.observe(lambda c: self._toggle("serve", c["new"]), names="value")
        self.stop_button.on_click(lambda _: self.stop())
        self.status = widgets.HTML()

        self.charts = Charts(self.groups)

        controls = widgets.HBox([self.window, self.event_type, self.area])
        buttons = widgets.HBox([self.etl_on, self.push_on, self.serve_on, self.stop_button])
        self.grid = widgets.VBox([self.charts.canvas, self.status])
        self.widget = widgets.VBox([controls, buttons, self.grid])

    # -- processes ----------------------------------------------------------------

    def _toggle(self, name: str, on: bool) -> None:
        if on and not self._stop.is_set():
            if name == "push" and not self._applied:
                self._push_wanted.set()  # the health thread applies the repository first
                return
            if name == "serve" and not self._start_service():
                return
            self.bg.start(name, *self.args[name])
        elif not on:
            if name == "push":
                self._push_wanted.clear()
            self.bg.stop(name)
        self.refresh()

    def _start_service(self) -> bool:
        """Send the live requests to the service at the profile's address: True when one
        has to be started there (the newest run's model), False when one answers
        already or the profile names none."""
        if self.service is None:
            self.problem = "the profile has no services.match_url: no match service"
            self._on_main(lambda: setattr(self.serve_on, "value", False))
            return False
        self.forwarder = self.forwarder or Forwarder(self.settings.match_url)
        if self.service_charts is None:  # its charts appear with the first use
            self.service_charts = ServiceCharts()
            self.grid.children = (*self.grid.children, self.service_charts.canvas)
        self.watcher.state.to_match.clear()  # from now on, not what came before
        self.service.sample()
        return not self.service.up

    def _apply_then_push(self) -> None:
        """The push source must be in the registry (applying again changes nothing). It
        takes a while, so it runs on the health thread, which alone uses Feast: two
        threads importing Feast's repository at once can deadlock."""
        self._on_main(lambda: setattr(self.push_on, "description", "applying features..."))
        try:
            from ridematch_nb.features import store

            store.apply(self.settings)
            self._applied = True
        except Exception as exc:
            log.warning("feast apply failed: %s", exc)
            self.problem = f"feast apply failed: {exc}"
            self._on_main(lambda: setattr(self.push_on, "value", False))
            return
        finally:
            self._on_main(lambda: setattr(self.push_on, "description", "push-online"))
            self._push_wanted.clear()
        if self.push_on.value and not self._stop.is_set():
            self.bg.start("push", *self.args["push"])

    def start(self, etl: bool = False, push: bool = False, serve: bool = False) -> None:
        """Start the generator and the refresh and health threads; the ETL, the push
        loop and the match service too when asked (or later, with their buttons)."""
        self._stop.clear()
        self.started_at = time.time()
        self._ioloop = _kernel_loop()
        with self._lock:
            if self.watcher.consumer is None:
                self.watcher.connect()  # before the generator: its first tick has every driver
        self.bg.start("generator", *self.args["generator"])
        if etl:  # a button pressed already stays pressed
            self.etl_on.value = True
        if push:
            self.push_on.value = True
        if serve:
            self.serve_on.value = True
        self._threads = [
            threading.Thread(target=self._refresh_loop, name="live-refresh", daemon=True),
            threading.Thread(target=self._health_loop, name="live-health", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> dict[str, int | None]:
        """Stop the threads and every process; returns the processes' exit codes."""
        self._stop.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=60)
        codes = self.bg.stop_all()
        self.etl_on.value = self.push_on.value = self.serve_on.value = False
        with self._lock:
            self.watcher.close()
            self.watcher.consumer = self.watcher._admin = None
            self.refresh()
        return codes

    def run_for(self, duration_s: float) -> dict:
        """Headless use: keep the dashboard running ``duration_s`` seconds (0: return at
        once and run until stopped, interrupted or the kernel shuts down), then stop."""
        if duration_s < 0:
            raise ValueError(f"parameter duration_s={duration_s!r} must be >= 0")
        if duration_s == 0:
            return self.summary()
        try:
            end = time.monotonic() + duration_s
            while (left := end - time.monotonic()) > 0:
                self._stop.wait(min(left, self.refresh_s))
                self.refresh()  # this cell holds the kernel's thread: redraw from here
        except KeyboardInterrupt:
            log.info("interrupted: stopping the live processes")
        codes = self.stop()
        return {**self.summary(), "exit_codes": codes}

    # -- refresh ----------------------------------------------------------------------

    def _on_main(self, fn) -> None:
        """Run ``fn`` on the kernel's own thread, where the frontend's messages to the
        widgets are handled too, so a chart is never changed by two threads at once.
        Outside a kernel (a script, a test) there is no such thread: run it here."""
        if self._ioloop is None:
            fn()
        else:
            self._ioloop.add_callback(fn)

    def _request_refresh(self) -> None:
        if not self._refresh_pending.is_set():
            self._refresh_pending.set()
            self._on_main(self._refresh_now)

    def _refresh_now(self) -> None:
        self._refresh_pending.clear()
        try:
            self.refresh()
        except Exception as exc:
            log.warning("live refresh: %s", exc)

    def _refresh_loop(self) -> None:
        """Poll the stream and redraw, every ``refresh_s``."""
        while not self._stop.is_set():
            deadline = time.monotonic() + self.refresh_s
            try:
                while (left := deadline - time.monotonic()) > 0 and not self._stop.is_set():
                    timeout_ms = max(1, int(min(left, 0.25) * 1000))
                    self.watcher.poll(timeout_ms, lock=self._lock)
                self._request_refresh()
            except Exception as exc:  # a broker restart: say so, keep going
                log.warning("live poll: %s", exc)
                self.problem = str(exc)
                self._stop.wait(1.0)

    def _health_loop(self) -> None:
        """Lag and freshness every HEALTH_EVERY_S (admin and online-store round trips, kept
        off the refresh thread so a slow answer never freezes the charts)."""
        while not self._stop.is_set():
            try:
                if self._push_wanted.is_set():
                    self._apply_then_push()
                self._health()
            except Exception as exc:
                log.warning("live health: %s", exc)
            self._stop.wait(HEALTH_EVERY_S)

    def _health(self) -> None:
        # the poll thread's consumer is only read here (its high watermarks)
        lags, fresh = self.watcher.lags(self.watcher.ends()), self.watcher.freshness()
        with self._lock:
            self.watcher.state.record_health(time.time(), lags, fresh)
        for name, value in lags.items():
            if value is not None:
                self.peaks[f"lag_{name}"] = max(self.peaks.get(f"lag_{name}", 0), value)
        if fresh is not None:
            self.peaks["fresh_s_min"] = min(self.peaks.get("fresh_s_min", fresh), fresh)
        if self.serve_on.value and self.service is not None:
            self.service.sample()
            if self.service.up:  # until then the requests wait (the newest 500 of them)
                with self._lock:
                    waiting = list(self.watcher.state.to_match)
                    self.watcher.state.to_match.clear()
                self.forwarder.offer(waiting)

    def refresh(self) -> None:
        """Redraw every chart from the current state, in place."""
        with self._lock:
            now, state = time.time(), self.watcher.state
            window = WINDOWS[self.window.value]
            area = None if self.area.value == CITY else self.area.value
            kind = None if self.event_type.value == ALL else self.event_type.value
            rates = state.rates(now, window, area)
            c = self.charts
            c.draw_rates(rates, window, kind)
            c.draw_status(state.status_mix(area))
            c.draw_map(state, now, window, area, kind)
            c.draw_health(state.health_frame(now, window), window)
            c.draw_rejects(state.recent_rejects(now, window))
            if self.service_charts is not None:
                self.service_charts.draw_service(self.service.points, now, window)
                self.service_charts.draw_drift(self.service.drift, self._service_note())
                self.service_charts.draw()
            c.draw()
            if len(rates):
                per_s = rates.sum(axis=1).tail(10).mean()
                self.peaks["events_per_s"] = max(self.peaks.get("events_per_s", 0.0), per_s)
            self.status.value = self._status_html(now)
            self.refreshes += 1

    def _status_html(self, now: float) -> str:
        totals = self.watcher.state.totals
        rows = []
        for name, proc in self.bg.procs.items():
            tail = html.escape(" / ".join(self.bg.tail(name, 1)))[-110:]
            rows.append(
                f"<tr><td><b>{name}</b></td><td>pid {proc.pid}</td>"
                f"<td>{proc.state()}</td><td><code>{tail}</code></td></tr>"
            )
        seen = ", ".join(f"{k} {v:,}" for k, v in sorted(totals.items())) or "nothing yet"
        return (
            f"<div style='font-size:12px'><p>topic <code>{html.escape(self.settings.topic)}"
            f"</code> · seen since start: {seen}<br>refreshed {time.strftime('%H:%M:%S')}"
            f" ({self.refreshes} refreshes)"
            + (f"<br><b>problem</b>: {html.escape(self.problem)}" if self.problem else "")
            + "</p>"
            f"<table>{''.join(rows)}</table></div>"
        )

    def _service_note(self) -> str:
        if not self.serve_on.value:
            return "press 'match service' to send it the live requests"
        if not self.service.up:
            return "waiting for the service to answer"
        return "no drift figure yet (100 scored candidates needed; push-online on?)"

    def summary(self) -> dict:
        """What the dashboard saw, for the notebook's record."""
        state = self.watcher.state
        last = state.health[-1] if state.health else (None, {}, None)
        return {
            "seconds": round(time.time() - (self.started_at or time.time()), 1),
            "refreshes": self.refreshes,
            "seen": dict(state.totals),
            "drivers_seen": len(state.drivers),
            "status_mix": state.status_mix().to_dict(),
            "last_lag": last[1],
            "last_fresh_s": last[2],
            "peaks": {k: round(float(v), 3) for k, v in self.peaks.items()},
            "service": self._service_summary(),
            "running": self.bg.pids(),
            "processes": self.bg.states(),
        }

    def _service_summary(self) -> dict:
        if self.service is None or self.forwarder is None:
            return {}
        points = [p for p in self.service.points if p[2] is not None]
        return {
            **self.forwarder.counts,
            "last_failure": self.forwarder.last_failure,
            "last_rate": round(points[-1][1], 2) if points else None,
            "last_p99_ms": round(points[-1][2], 2) if points else None,
            "drift": {k: round(v, 3) for k, v in self.service.drift.items()},
        }
