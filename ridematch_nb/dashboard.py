"""The live notebook's dashboard: widgets and charts that update in place.

Charts are plotly ``FigureWidget``s: each refresh replaces the data of existing traces
inside one ``batch_update`` (one message per chart, no redraw of the page, no new
figure objects), so the page does not flicker and memory stays flat however long it
runs. A thread of the kernel polls the stream and refreshes every ``refresh_s``; the
kernel stays free between cells, so the controls answer while the charts move.

The processes belong to ``live.Background``; the numbers to ``watch.Watcher``.
"""

from __future__ import annotations

import html
import logging
import threading
import time
from pathlib import Path

import ipywidgets as widgets
import plotly.graph_objects as go

from ridematch_nb.config import Settings
from ridematch_nb.etl import DEFAULT_GROUP as ETL_GROUP
from ridematch_nb.events import DRIVER_STATUSES, EVENT_TYPES, LAT_RANGE, LON_RANGE
from ridematch_nb.features import PUSH_GROUP
from ridematch_nb.live import Background
from ridematch_nb.watch import HOT_SPOTS, Watcher

log = logging.getLogger(__name__)

WINDOWS = {"30 s": 30, "1 min": 60, "5 min": 300, "10 min": 600}
STATUS_COLOURS = {"idle": "#2ca02c", "en_route": "#ff7f0e", "on_trip": "#1f77b4", "offline": "#bbb"}
TYPE_COLOURS = {"driver_update": "#1f77b4", "rider_request": "#d62728", "offer_outcome": "#9467bd"}
ALL, CITY = "all", "whole city"  # the unfiltered choices of the event type and area menus
HEALTH_EVERY_S = 2.0  # lag and freshness: an admin round trip and an online read
HEAL_AFTER_S = 8.0  # a chart whose view has not answered this long is replaced (_heal)
HEAL_MAX = 3  # ... at most this many times
# The map's frame: the simulated city, or about 5 km around a chosen hot spot.
CITY_VIEW = ((40.57, 40.90), (-74.08, -73.74))
AREA_HALF_SPAN = (0.025, 0.033)


def _figure(title: str, height: int = 260, **layout) -> go.FigureWidget:
    fig = go.FigureWidget()
    fig.update_layout(
        title={"text": title, "font": {"size": 13}},
        height=height,
        width=520,
        margin={"l": 50, "r": 10, "t": 36, "b": 36},
        legend={"orientation": "h", "y": -0.18},
        uirevision="keep",  # zoom and hidden traces survive updates
        **layout,
    )
    return fig


def _kernel_loop():
    """The running IPython kernel's event loop, or None outside a kernel."""
    try:
        from ipykernel.kernelbase import Kernel
    except ImportError:
        return None
    return Kernel.instance().io_loop if Kernel.initialized() else None


def _view(area: str | None) -> tuple[tuple[float, float], tuple[float, float]]:
    if area is None:
        return CITY_VIEW
    lat, lon = HOT_SPOTS[area]
    return (lat - AREA_HALF_SPAN[0], lat + AREA_HALF_SPAN[0]), (
        lon - AREA_HALF_SPAN[1],
        lon + AREA_HALF_SPAN[1],
    )


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
        refresh_s: float = 1.0,
        groups: dict[str, str] | None = None,
    ) -> None:
        if refresh_s <= 0:
            raise ValueError(f"parameter refresh_s={refresh_s!r} must be > 0")
        self.settings, self.refresh_s = settings, refresh_s
        self.args = {"generator": generator_args, "etl": etl_args, "push": push_args}
        self.groups = groups or {"etl": ETL_GROUP, "push": PUSH_GROUP}
        self.bg = Background(settings, log_dir)
        self.watcher = Watcher(settings, self.groups)
        self._lock = threading.RLock()  # state and figures: the refresh thread vs the controls
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._push_wanted = threading.Event()
        self._refresh_pending = threading.Event()
        self._ioloop = None
        self.problem = ""  # the last error the threads met, shown under the charts
        self.heals: dict[str, int] = {}
        self._unanswered: dict[str, float] = {}
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
        self.stop_button = widgets.Button(description="Stop all", button_style="danger")
        for control in (self.window, self.event_type, self.area):
            control.observe(lambda _: self.refresh(), names="value")
        self.etl_on.observe(lambda c: self._toggle("etl", c["new"]), names="value")
        self.push_on.observe(lambda c: self._toggle("push", c["new"]), names="value")
        self.stop_button.on_click(lambda _: self.stop())
        self.status = widgets.HTML()

        self.fig_rates = _figure("events per second", xaxis_title="seconds ago")
        for kind in EVENT_TYPES:
            self.fig_rates.add_scatter(
                name=kind, mode="lines", line={"color": TYPE_COLOURS[kind], "width": 2}
            )
        self.fig_status = _figure("driver status (newest update per driver)")
        self.fig_status.add_bar(
            x=list(DRIVER_STATUSES), marker_color=[STATUS_COLOURS[s] for s in DRIVER_STATUSES]
        )
        self.fig_map = _figure("drivers by status, open requests", height=470)
        for s in DRIVER_STATUSES:
            self.fig_map.add_scatter(
                name=s, mode="markers", marker={"size": 5, "color": STATUS_COLOURS[s]}
            )
        self.fig_map.add_scatter(
            name="open request",
            mode="markers",
            marker={"size": 10, "color": "#d62728", "symbol": "x"},
        )
        self.fig_map.add_scatter(
            name="offer (window)",
            mode="markers",
            marker={"size": 7, "color": "#9467bd", "symbol": "diamond-open"},
        )
        self.fig_map.update_xaxes(title="longitude")
        self.fig_map.update_yaxes(title="latitude", scaleanchor="x", scaleratio=1 / 0.758)
        self.fig_lag = _figure("consumer lag (records not committed)", xaxis_title="seconds ago")
        for name in self.groups:
            self.fig_lag.add_scatter(name=f"{name}: {self.groups[name]}", mode="lines+markers")
        self.fig_fresh = _figure(
            "online freshness: age of the newest online value (s)",
            xaxis_title="seconds ago",
            showlegend=False,
        )
        self.fig_fresh.add_scatter(mode="lines+markers", line={"color": "#2ca02c"})
        self.fig_rejects = _figure("rejected values by reason (window)", showlegend=False)
        self.fig_rejects.add_bar(orientation="h", marker_color="#d62728")

        controls = widgets.HBox([self.window, self.event_type, self.area])
        buttons = widgets.HBox([self.etl_on, self.push_on, self.stop_button])
        self._slots = {  # each chart in a box of its own, so a dead view can be replaced
            name: widgets.Box([getattr(self, name)])
            for name in (
                "fig_rates",
                "fig_status",
                "fig_map",
                "fig_lag",
                "fig_fresh",
                "fig_rejects",
            )
        }
        slot = self._slots
        grid = widgets.GridBox(
            [
                slot["fig_rates"],
                slot["fig_status"],
                slot["fig_map"],
                widgets.VBox([slot["fig_lag"], slot["fig_fresh"]]),
                slot["fig_rejects"],
                self.status,
            ],
            layout=widgets.Layout(grid_template_columns="repeat(2, 540px)"),
        )
        self.widget = widgets.VBox([controls, buttons, grid])

    # -- processes ----------------------------------------------------------------

    def _toggle(self, name: str, on: bool) -> None:
        if on and not self._stop.is_set():
            if name == "push" and not self._applied:
                self._push_wanted.set()  # the health thread applies the repository first
                return
            self.bg.start(name, *self.args[name])
        elif not on:
            if name == "push":
                self._push_wanted.clear()
            self.bg.stop(name)
        self.refresh()

    def _apply_then_push(self) -> None:
        """The push source must be in the registry (applying again changes nothing). It
        takes a while, so it runs on the health thread, which alone uses Feast: two
        threads importing Feast's repository at once can deadlock."""
        from ridematch_nb.features import apply

        self._on_main(lambda: setattr(self.push_on, "description", "applying features..."))
        try:
            apply(self.settings)
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

    def start(self, etl: bool = False, push: bool = False) -> None:
        """Start the generator and the refresh and health threads; the ETL and the push
        loop too when asked (or later, with their buttons)."""
        self._stop.clear()
        self.started_at = time.time()
        self._ioloop = _kernel_loop()
        with self._lock:
            if self.watcher.consumer is None:
                self.watcher.connect()  # before the generator: its first tick has every driver
        self.bg.start("generator", *self.args["generator"])
        self.etl_on.value, self.push_on.value = etl, push
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
        self.etl_on.value = self.push_on.value = False
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
                    with self._lock:
                        self.watcher.poll(timeout_ms=max(1, int(min(left, 0.25) * 1000)))
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
        with self._lock:
            ends = self.watcher.ends()
        lags, fresh = self.watcher.lags(ends), self.watcher.freshness()
        with self._lock:
            self.watcher.state.record_health(time.time(), lags, fresh)
        for name, value in lags.items():
            if value is not None:
                self.peaks[f"lag_{name}"] = max(self.peaks.get(f"lag_{name}", 0), value)
        if fresh is not None:
            self.peaks["fresh_s_min"] = min(self.peaks.get("fresh_s_min", fresh), fresh)

    def refresh(self) -> None:
        """Redraw every chart from the current state, in place."""
        with self._lock:
            now, state = time.time(), self.watcher.state
            window = WINDOWS[self.window.value]
            area = None if self.area.value == CITY else self.area.value
            kind = None if self.event_type.value == ALL else self.event_type.value
            rates = state.rates(now, window, area)
            with self.fig_rates.batch_update():
                for trace in self.fig_rates.data:
                    trace.x, trace.y = rates.index.tolist(), rates[trace.name].tolist()
                    trace.visible = kind in (None, trace.name)
            mix = state.status_mix(area)
            with self.fig_status.batch_update():
                self.fig_status.data[0].y = mix.tolist()
            self._draw_map(now, window, area, kind)
            self._draw_health(now, window)
            rejects = state.recent_rejects(now, window)
            with self.fig_rejects.batch_update():
                self.fig_rejects.data[0].x = rejects.tolist()
                self.fig_rejects.data[0].y = list(rejects.index)
                self.fig_rejects.layout.annotations = (
                    [] if len(rejects) else [{"text": "none", "showarrow": False}]
                )
            if len(rates):
                per_s = rates.sum(axis=1).tail(10).mean()
                self.peaks["events_per_s"] = max(self.peaks.get("events_per_s", 0.0), per_s)
            self.status.value = self._status_html(now)
            self.refreshes += 1
            if self._ioloop is not None:
                self._heal(time.monotonic())

    def _heal(self, now: float) -> None:
        """Replace a chart whose view stopped answering. Plotly's frontend acknowledges
        every edit; seen here under heavy load: the first charts of a page, created while
        Plotly's script was still loading, stay blank forever. A new widget (same traces,
        same layout) gets a fresh view. At most HEAL_MAX times per chart: with no browser
        attached (papermill) nothing ever answers."""
        for name, slot in self._slots.items():
            fig = getattr(self, name)
            if not (fig._layout_edit_in_process or fig._trace_edit_in_process):
                self._unanswered.pop(name, None)
                continue
            since = self._unanswered.setdefault(name, now)
            if now - since > HEAL_AFTER_S and self.heals.get(name, 0) < HEAL_MAX:
                fresh = go.FigureWidget(fig.to_dict())
                setattr(self, name, fresh)
                slot.children = (fresh,)
                fig.close()
                self.heals[name] = self.heals.get(name, 0) + 1
                self._unanswered.pop(name)

    def _draw_map(self, now: float, window: int, area: str | None, kind: str | None) -> None:
        state = self.watcher.state
        drivers = state.driver_points(area)
        requests = state.open_requests(now, area)
        offers = state.recent_offers(now, window, area)
        (lat0, lat1), (lon0, lon1) = _view(area)
        with self.fig_map.batch_update():
            for trace in self.fig_map.data[: len(DRIVER_STATUSES)]:
                mine = drivers[drivers.status == trace.name]
                trace.x, trace.y = mine.lon.tolist(), mine.lat.tolist()
                trace.visible = kind in (None, "driver_update")
            req, off = self.fig_map.data[len(DRIVER_STATUSES) :]
            req.x, req.y = requests.lon.tolist(), requests.lat.tolist()
            req.visible = kind in (None, "rider_request")
            off.x, off.y = offers.lon.tolist(), offers.lat.tolist()
            off.visible = kind == "offer_outcome"
            self.fig_map.layout.xaxis.range = [max(lon0, LON_RANGE[0]), min(lon1, LON_RANGE[1])]
            self.fig_map.layout.yaxis.range = [max(lat0, LAT_RANGE[0]), min(lat1, LAT_RANGE[1])]

    def _draw_health(self, now: float, window: int) -> None:
        health = self.watcher.state.health_frame(now, window)
        with self.fig_lag.batch_update():
            for trace, name in zip(self.fig_lag.data, self.groups, strict=True):
                col = f"lag_{name}"
                ok = health if col not in health else health[health[col].notna()]
                trace.x = ok["ago"].tolist() if len(ok) else []
                trace.y = ok[col].tolist() if col in ok else []
            self.fig_lag.layout.xaxis.range = [-window, 0]
        with self.fig_fresh.batch_update():
            ok = health[health["fresh_s"].notna()] if "fresh_s" in health else health
            self.fig_fresh.data[0].x = ok["ago"].tolist() if len(ok) else []
            self.fig_fresh.data[0].y = ok["fresh_s"].tolist() if len(ok) else []
            self.fig_fresh.layout.xaxis.range = [-window, 0]

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

    def summary(self) -> dict:
        """What the dashboard saw, for the notebook's record."""
        state = self.watcher.state
        last = state.health[-1] if state.health else (None, {}, None)
        return {
            "seconds": round(time.time() - (self.started_at or time.time()), 1),
            "refreshes": self.refreshes,
            "charts_replaced": dict(self.heals),
            "seen": dict(state.totals),
            "drivers_seen": len(state.drivers),
            "status_mix": state.status_mix().to_dict(),
            "last_lag": last[1],
            "last_fresh_s": last[2],
            "peaks": {k: round(float(v), 3) for k, v in self.peaks.items()},
            "running": self.bg.pids(),
            "processes": self.bg.states(),
        }
