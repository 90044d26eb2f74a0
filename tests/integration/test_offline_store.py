"""The offline store's training rows against an independent point-in-time join, row by
row: crafted driver updates in a prefix and Feast project of this test's own
(tests/helpers/crafted_lake.py holds the data and the reference)."""

import numpy as np
import pandas as pd
import pytest

from ridematch_nb.features import store as features
from tests.helpers.crafted_lake import (
    STATE,
    STATS,
    crafted_updates,
    entity_rows,
    land,
    reference,
    retrieve,
)


@pytest.fixture
def crafted(settings, unique):
    settings = settings.with_overrides(prefix=f"tests/{unique}")
    rng = np.random.default_rng(13)
    updates = crafted_updates(rng)
    land(settings, updates)
    return settings, f"t_{unique}", updates, entity_rows(updates, rng)


def test_training_rows_equal_an_independent_merge_asof_row_by_row(crafted):
    settings, project, updates, entities = crafted
    assert updates.duplicated(["driver_id", "ts"]).sum() > 20  # there are ties to break
    fs = features.apply(settings, project)
    got = retrieve(fs, entities)
    want = reference(updates, entities)
    assert got.index.tolist() == want.index.tolist()  # every entity row, once, duplicates too
    assert (got.driver_id == want.driver_id).all()
    for col in [*STATE, *STATS]:
        same = (got[col] == want[col]) | (got[col].isna() & want[col].isna())
        assert same.all(), f"{col} differs:\n{pd.concat([got[col], want[col]], axis=1)[~same]}"
    # the cases that matter are all there: values past a TTL are null, per view
    assert want.lat.isna().sum() > 50 and want.lat.notna().sum() > 100
    assert (want.lat.isna() & want.accept_rate_7d.notna()).sum() > 50
    assert want.accept_rate_7d.isna().sum() > 5


def test_without_ties_the_store_equals_feasts_own_duckdb_store(settings, unique):
    """Where no two rows of a driver share a time, Feast's DuckDB store (its window join)
    and ours (an ASOF join) return the same rows; Feast's leaves ties to the engine."""
    settings = settings.with_overrides(prefix=f"tests/{unique}")
    rng = np.random.default_rng(7)
    updates = crafted_updates(rng).drop_duplicates(["driver_id", "ts"], keep=False)
    land(settings, updates)
    entities = entity_rows(updates, rng)
    got = retrieve(features.apply(settings, f"t_{unique}"), entities)
    stock = settings.with_overrides(feast={"offline_store": {"type": "duckdb"}})
    theirs = retrieve(features.apply(stock, f"t_{unique}"), entities)
    assert got.index.tolist() == theirs.index.tolist() == entities.row.tolist()
    pd.testing.assert_frame_equal(got, theirs[got.columns], check_dtype=False)
    assert got.lat.notna().sum() > 100 and got.lat.isna().sum() > 50
