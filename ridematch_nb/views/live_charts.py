"""The live notebook's six charts (and the match service's two, in a figure of their
own): matplotlib figures on ipympl canvases whose artists are made once and moved on
every refresh (``set_data``, ``set_offsets``, bar heights), so memory stays flat however
long the dashboard runs. ``dashboard`` owns the
widgets and threads and calls ``Charts.draw_*`` with the watcher's state.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ridematch_nb.contract.events import DRIVER_STATUSES, EVENT_TYPES, LAT_RANGE, LON_RANGE
from ridematch_nb.views.watch import HOT_SPOTS

STATUS_COLOURS = {"idle": "#2ca02c", "en_route": "#ff7f0e", "on_trip": "#1f77b4", "offline": "#bbb"}
TYPE_COLOURS = {"driver_update": "#1f77b4", "rider_request": "#d62728", "offer_outcome": "#9467bd"}
# The map's frame: the simulated city, or about 5 km around a chosen hot spot.
CITY_VIEW = ((40.57, 40.90), (-74.08, -73.74))
AREA_HALF_SPAN = (0.025, 0.033)


TITLES = {
    "rates": "events per second",
    "status": "driver status (newest update per driver)",
    "map": "drivers by status, open requests",
    "lag": "consumer lag (records not committed)",
    "fresh": "online freshness: age of the newest online value (s)",
    "rejects": "rejected values by reason (window)",
}
SERVICE_TITLES = {
    "service": "match service: requests/s and p99 (from its /metrics)",
    "drift": "match service: feature drift (KS statistic)",
}


class Charts:
    """The six charts: one figure, artists made once and moved on every refresh."""

    def __init__(self, groups: dict[str, str]) -> None:
        self.fig = Figure(figsize=(11, 10.5), layout="constrained")
        self.ax = self.fig.subplot_mosaic(
            [["rates", "status"], ["map", "lag"], ["map", "fresh"], ["rejects", "rejects"]],
            height_ratios=[1, 1, 1, 0.7],
        )
        for name, ax in self.ax.items():
            ax.set_title(TITLES[name], fontsize=10)
            ax.tick_params(labelsize=8)
        self.rates = {
            k: self.ax["rates"].plot([], [], label=k, color=TYPE_COLOURS[k])[0] for k in EVENT_TYPES
        }
        self.ax["rates"].legend(fontsize=8, loc="upper left")
        self.ax["rates"].set_xlabel("seconds ago", fontsize=8)
        self.status = self.ax["status"].bar(
            DRIVER_STATUSES,
            [0] * len(DRIVER_STATUSES),
            color=[STATUS_COLOURS[s] for s in DRIVER_STATUSES],
        )
        m = self.ax["map"]
        self.drivers = {
            s: m.scatter([], [], s=7, color=STATUS_COLOURS[s], label=s) for s in DRIVER_STATUSES
        }
        self.requests = m.scatter([], [], s=60, marker="x", color="#d62728", label="open request")
        self.offers = m.scatter(
            [], [], s=30, marker="D", facecolors="none", edgecolors="#9467bd", label="offer"
        )
        m.set_aspect(1 / 0.758, adjustable="box")
        m.set_xlabel("longitude", fontsize=8)
        m.legend(fontsize=8, loc="lower right", markerscale=1.5)
        self.lags = {
            name: self.ax["lag"].plot([], [], marker=".", label=f"{name}: {group}")[0]
            for name, group in groups.items()
        }
        self.ax["lag"].legend(fontsize=8, loc="upper left")
        self.fresh = self.ax["fresh"].plot([], [], marker=".", color="#2ca02c")[0]
        for name in ("lag", "fresh"):
            self.ax[name].set_xlabel("seconds ago", fontsize=8)
        self.canvas = _canvas(self.fig)

    def draw(self) -> None:
        self.canvas.draw_idle()

    def draw_rates(self, rates, window: int, kind: str | None) -> None:
        for name, line in self.rates.items():
            line.set_data(rates.index, rates[name])
            line.set_visible(kind in (None, name))
        self.ax["rates"].set_xlim(-window + 1, 0)
        _autoscale_y(self.ax["rates"], *[rates[n] for n in rates if kind in (None, n)])

    def draw_status(self, mix) -> None:
        for bar, value in zip(self.status, mix, strict=True):
            bar.set_height(value)
        _autoscale_y(self.ax["status"], mix)

    def draw_map(self, state, now: float, window: int, area: str | None, kind: str | None):
        drivers = state.driver_points(area)
        for status, dots in self.drivers.items():
            mine = drivers[drivers.status == status]
            dots.set_offsets(_points(mine))
            dots.set_visible(kind in (None, "driver_update"))
        self.requests.set_offsets(_points(state.open_requests(now, area)))
        self.requests.set_visible(kind in (None, "rider_request"))
        self.offers.set_offsets(_points(state.recent_offers(now, window, area)))
        self.offers.set_visible(kind == "offer_outcome")
        (lat0, lat1), (lon0, lon1) = view(area)
        self.ax["map"].set_xlim(max(lon0, LON_RANGE[0]), min(lon1, LON_RANGE[1]))
        self.ax["map"].set_ylim(max(lat0, LAT_RANGE[0]), min(lat1, LAT_RANGE[1]))

    def draw_health(self, health, window: int) -> None:
        series = []
        for name, line in self.lags.items():
            col = f"lag_{name}"
            ok = health[health[col].notna()] if col in health else health.iloc[:0]
            line.set_data(ok["ago"] if len(ok) else [], ok[col] if len(ok) else [])
            series.append(ok[col] if len(ok) else [])
        _autoscale_y(self.ax["lag"], *series)
        ok = health[health["fresh_s"].notna()] if "fresh_s" in health else health.iloc[:0]
        self.fresh.set_data(ok["ago"] if len(ok) else [], ok["fresh_s"] if len(ok) else [])
        _autoscale_y(self.ax["fresh"], ok["fresh_s"] if len(ok) else [])
        for name in ("lag", "fresh"):
            self.ax[name].set_xlim(-window, 0)

    def draw_rejects(self, rejects) -> None:
        """Reasons come and go, so this one chart is drawn afresh (a few bars at most)."""
        labels, values = list(rejects.index), rejects.to_numpy()
        _bars_afresh(self.ax["rejects"], TITLES["rejects"], labels, values, "#d62728", "none")


class ServiceCharts:
    """The match service's two charts, a figure of their own: made when the live view
    first sends the service its requests, so a view without it draws nothing more
    (a redraw of the six charts already takes most of a core's second here)."""

    def __init__(self) -> None:
        self.fig = Figure(figsize=(11, 2.8), layout="constrained")
        self.ax = self.fig.subplot_mosaic([["service", "drift"]])
        for name, ax in self.ax.items():
            ax.set_title(SERVICE_TITLES[name], fontsize=10)
            ax.tick_params(labelsize=8)
        self.ax["service"].set_xlabel("seconds ago", fontsize=8)
        self.served = self.ax["service"].plot([], [], marker=".", label="requests/s")[0]
        self.p99_ax = self.ax["service"].twinx()
        self.p99_ax.tick_params(labelsize=8)
        self.p99 = self.p99_ax.plot([], [], marker=".", color="#d62728", label="p99 ms")[0]
        self.ax["service"].legend(handles=[self.served, self.p99], fontsize=8, loc="upper left")
        self.canvas = _canvas(self.fig)

    def draw(self) -> None:
        self.canvas.draw_idle()

    def draw_service(self, points, now: float, window: int) -> None:
        """``points``: (time, requests/s, p99 ms) of each scrape of the service."""
        recent = [(at - now, rate, p99) for at, rate, p99 in points if now - at <= window]
        ago = [p[0] for p in recent]
        self.served.set_data(ago, [p[1] for p in recent])
        kept = [(a, p) for a, _, p in recent if p is not None]
        self.p99.set_data([a for a, _ in kept], [p for _, p in kept])
        _autoscale_y(self.ax["service"], [p[1] for p in recent])
        _autoscale_y(self.p99_ax, [p for _, p in kept])
        self.ax["service"].set_xlim(-window, 0)

    def draw_drift(self, drift: dict[str, float], note: str) -> None:
        """Features come with the first scrape that has enough values: drawn afresh,
        only when what it shows changed (a redraw of the axes is not free)."""
        if (drift, note) == getattr(self, "_drift_shown", None):
            return
        self._drift_shown = (dict(drift), note)
        names = sorted(drift)
        ax, title = self.ax["drift"], SERVICE_TITLES["drift"]
        if _bars_afresh(ax, title, names, [drift[n] for n in names], "#4C72B0", note, 8):
            ax.set_xlim(0, 1)


def _bars_afresh(ax, title: str, labels, values, color: str, note: str, note_size=None) -> bool:
    """Clear ``ax`` and draw one horizontal bar per label, or ``note`` when there is none
    (for charts whose categories come and go); True when bars were drawn."""
    ax.clear()
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)
    if len(labels):
        ax.barh(labels, values, color=color)
        return True
    size = {"fontsize": note_size} if note_size else {}
    ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes, **size)
    ax.set_xticks([])
    ax.set_yticks([])
    return False


def _canvas(fig: Figure):
    """An ipympl canvas widget for ``fig``: no toolbar, no resizing."""
    from ipympl.backend_nbagg import Canvas, FigureManager

    canvas = Canvas(fig)
    FigureManager(canvas, 0)
    canvas.header_visible = False
    canvas.footer_visible = False
    canvas.resizable = False
    return canvas


def _autoscale_y(ax, *series) -> None:
    top = max([float(np.nanmax(v)) for v in series if len(v)] or [0.0])
    ax.set_ylim(0, top * 1.15 + 1)


def view(area: str | None) -> tuple[tuple[float, float], tuple[float, float]]:
    if area is None:
        return CITY_VIEW
    lat, lon = HOT_SPOTS[area]
    return (lat - AREA_HALF_SPAN[0], lat + AREA_HALF_SPAN[0]), (
        lon - AREA_HALF_SPAN[1],
        lon + AREA_HALF_SPAN[1],
    )


def _points(frame) -> np.ndarray:
    """A frame's (lon, lat) as scatter offsets; an empty (0, 2) array when it has none."""
    return np.c_[frame.lon, frame.lat] if len(frame) else np.empty((0, 2))
