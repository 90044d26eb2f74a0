"""Deleting from the lake: S3 can answer HTTP 200 and still refuse some keys (botocore's
Stubber plays S3's answer; no server)."""

from __future__ import annotations

import pytest
from botocore.stub import Stubber

from ridematch_nb.config import load_settings
from ridematch_nb.lake.storage import Lake, S3Unavailable


@pytest.fixture
def keyed_settings():
    """The CI profile with keys of its own: a Lake needs some to build its client."""
    return load_settings("params/ci.yaml").with_overrides(
        aws_access_key_id="k", aws_secret_access_key="s"
    )


def test_lake_delete_raises_when_s3_refuses_some_keys_with_http_200(keyed_settings):
    lake = Lake(keyed_settings)
    reply = {
        "Deleted": [{"Key": "a"}],
        "Errors": [{"Key": "b", "Code": "AccessDenied", "Message": "no"}],
    }
    with Stubber(lake.client) as stub:
        stub.add_response("delete_objects", reply)
        with pytest.raises(S3Unavailable, match=r"refused to delete 1 of 2 objects.*b: Access"):
            lake.delete(["a", "b"])


def test_lake_delete_is_quiet_when_every_key_went(keyed_settings):
    lake = Lake(keyed_settings)
    with Stubber(lake.client) as stub:
        stub.add_response("delete_objects", {"Deleted": [{"Key": "a"}]})
        lake.delete(["a"])
        stub.assert_no_pending_responses()
