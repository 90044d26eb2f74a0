"""Review findings of issue 11, each held by a test that failed before its fix."""

from __future__ import annotations

import pytest
from botocore.stub import Stubber

from ridematch_nb import cli
from ridematch_nb.config import (
    ParameterError,
    load_settings,
    redis_url_with_password,
    with_stack_redis_password,
)
from ridematch_nb.lake.storage import Lake, S3Unavailable
from ridematch_nb.stream.kafka_io import TopicResetError
from ridematch_nb.stream.topics import delete_topic


@pytest.fixture
def settings():
    return load_settings("params/ci.yaml").with_overrides(
        aws_access_key_id="k", aws_secret_access_key="s", redis_url="redis://127.0.0.1:16379/0"
    )


def test_lake_delete_raises_when_s3_refuses_some_keys_with_http_200(settings):
    lake = Lake(settings)
    reply = {
        "Deleted": [{"Key": "a"}],
        "Errors": [{"Key": "b", "Code": "AccessDenied", "Message": "no"}],
    }
    with Stubber(lake.client) as stub:
        stub.add_response("delete_objects", reply)
        with pytest.raises(S3Unavailable, match=r"refused to delete 1 of 2 objects.*b: Access"):
            lake.delete(["a", "b"])


def test_lake_delete_is_quiet_when_every_key_went(settings):
    lake = Lake(settings)
    with Stubber(lake.client) as stub:
        stub.add_response("delete_objects", {"Deleted": [{"Key": "a"}]})
        lake.delete(["a"])
        stub.assert_no_pending_responses()


class _StubbornAdmin:
    """An admin whose broker keeps listing a deleted topic (pure logic, no broker)."""

    def __init__(self, forget_after: int | None) -> None:
        self.lists, self.deleted, self.forget_after = 0, [], forget_after

    def list_topics(self):
        self.lists += 1
        gone = self.deleted and self.forget_after is not None and self.lists > self.forget_after
        return [] if gone else ["t"]

    def delete_topics(self, topics):
        self.deleted += topics


def test_a_reset_fails_loudly_when_the_topic_outlives_its_deletion():
    admin = _StubbornAdmin(forget_after=None)
    with pytest.raises(TopicResetError, match="still listed"):
        delete_topic(admin, "t", timeout_s=0.3, poll_s=0.05)
    assert admin.deleted == ["t"]


def test_a_reset_waits_until_the_topic_is_gone():
    admin = _StubbornAdmin(forget_after=3)
    delete_topic(admin, "t", timeout_s=5, poll_s=0.01)
    assert admin.deleted == ["t"] and admin.lists == 4


def test_cli_shows_a_wrong_parameter_alone_with_exit_2(capsys):
    assert cli.main(["etl", "--roll-records", "0", "--params", "params/ci.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: parameter roll_records=0") and "Traceback" not in err


def test_cli_lets_an_unexpected_error_say_where_it_happened(monkeypatch):
    def broken(args):
        raise ValueError("a bug, not a user error")

    monkeypatch.setattr(cli, "_cmd_check_events", broken)
    with pytest.raises(ValueError, match="a bug"):  # Python prints where; not exit 2
        cli.main(["check-events", "1"])


def test_parameter_errors_are_still_value_errors():
    assert issubclass(ParameterError, ValueError)


def test_redis_password_goes_into_the_url_and_never_into_its_address(settings):
    with_pw = with_stack_redis_password(settings, {"RIDEMATCH_REDIS_PASSWORD": "s3cr3t-pw"})
    assert with_pw.redis_password == "s3cr3t-pw"
    assert "s3cr3t-pw" not in with_pw.redis_address and "***" in with_pw.redis_address
    assert with_pw.redis_port == settings.redis_port
    own = settings.with_overrides(redis_url=redis_url_with_password(settings.redis_url, "mine"))
    kept = with_stack_redis_password(own, {"RIDEMATCH_REDIS_PASSWORD": "s3cr3t-pw"})
    assert kept.redis_password == "mine"  # a URL with its own password wins
