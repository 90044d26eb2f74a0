"""Feature drift: each model feature's live values against the training set's.

The training notebook keeps a sample of the training rows' model features beside the
model (``drift_reference.parquet``). The match service adds the features of every
candidate it scores to a sliding window, and at each scrape of ``/metrics`` compares
window and reference feature by feature with the two-sample Kolmogorov-Smirnov
statistic (``scipy.stats.ks_2samp``): 0 when the two distributions agree, up to 1 when
they do not overlap. Training rows are offers, and the service scores every idle
candidate within its radius, so pickup distance differs by design (offers go to near
drivers first); the drivers' own features should not.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

REFERENCE_FILE = "drift_reference.parquet"
REFERENCE_ROWS = 5000  # training rows kept: enough for the statistic, small beside the model
WINDOW = 2000  # live values kept per feature
MIN_LIVE = 100  # fewer live values than this: no figure yet (one would mostly be noise)


def save_reference(rows: pd.DataFrame, features: list[str], folder: Path, seed: int = 0) -> Path:
    """A seeded sample of the training rows' model features, beside the model."""
    sample = rows[features].sample(n=min(REFERENCE_ROWS, len(rows)), random_state=seed)
    path = folder / REFERENCE_FILE
    sample.reset_index(drop=True).to_parquet(path, index=False)
    return path


def load_reference(folder: Path) -> pd.DataFrame | None:
    """The reference a model was saved with; None for a model saved without one."""
    path = folder / REFERENCE_FILE
    return pd.read_parquet(path) if path.is_file() else None


class DriftWindow:
    """The last ``window`` live values of each feature, and their distance from the
    reference."""

    def __init__(self, reference: pd.DataFrame, features: list[str], window: int = WINDOW):
        self.reference = {f: reference[f].dropna().to_numpy(dtype=float) for f in features}
        self.live = {f: deque(maxlen=window) for f in features}

    def add(self, columns: dict[str, np.ndarray]) -> None:
        """The features of the candidates of one request (arrays of equal length)."""
        for name, values in self.live.items():
            if name in columns:
                values.extend(np.asarray(columns[name], dtype=float).tolist())

    def scores(self) -> dict[str, float]:
        """KS statistic per feature that has at least ``MIN_LIVE`` live values."""
        out = {}
        for name, values in self.live.items():
            live = np.fromiter(values, dtype=float, count=len(values))
            live = live[~np.isnan(live)]
            if len(live) >= MIN_LIVE and len(self.reference[name]):
                out[name] = float(ks_2samp(self.reference[name], live).statistic)
        return out
