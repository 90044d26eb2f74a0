"""The drift window: its statistic is Kolmogorov-Smirnov's, per feature, once enough
live values came."""

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from ridematch_nb.model import drift


def _reference(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.normal(0, 1, n), "b": rng.uniform(0, 1, n)})


def test_no_figure_before_enough_live_values():
    window = drift.DriftWindow(_reference(), ["a", "b"])
    window.add({"a": np.zeros(drift.MIN_LIVE - 1), "b": np.zeros(drift.MIN_LIVE - 1)})
    assert window.scores() == {}
    window.add({"a": np.zeros(1)})
    assert set(window.scores()) == {"a"}


def test_same_distribution_scores_low_and_a_shifted_one_high():
    reference = _reference()
    window = drift.DriftWindow(reference, ["a", "b"])
    rng = np.random.default_rng(1)
    window.add({"a": rng.normal(0, 1, 1000), "b": rng.uniform(0.5, 1.5, 1000)})
    got = window.scores()
    assert got["a"] < 0.08 and got["b"] > 0.4


def test_the_window_keeps_the_newest_values_and_skips_missing_ones():
    reference = _reference()
    window = drift.DriftWindow(reference, ["a"], window=500)
    rng = np.random.default_rng(2)
    old, new = rng.normal(5, 1, 500), rng.normal(0, 1, 500)
    window.add({"a": old})
    window.add({"a": np.concatenate([new[:250], [np.nan] * 10, new[250:]])})
    kept = np.array(window.live["a"])
    assert len(kept) == 500 and np.isnan(kept).sum() == 10 and np.nanmean(kept) < 1
    expected = ks_2samp(reference["a"], kept[~np.isnan(kept)]).statistic
    assert window.scores()["a"] == expected


def test_the_reference_is_a_seeded_sample_of_the_training_rows(tmp_path):
    rows = _reference(n=drift.REFERENCE_ROWS + 500).assign(extra=1)
    drift.save_reference(rows, ["a", "b"], tmp_path)
    saved = drift.load_reference(tmp_path)
    assert list(saved.columns) == ["a", "b"] and len(saved) == drift.REFERENCE_ROWS
    assert saved["a"].isin(rows["a"]).all()
    drift.save_reference(rows, ["a", "b"], tmp_path)
    assert drift.load_reference(tmp_path).equals(saved)
    assert drift.load_reference(tmp_path / "nowhere") is None
