"""A topic reset deletes the topic and waits until the broker stops listing it (pure
logic over an admin stand-in; the real broker's reset is in tests/integration)."""

from __future__ import annotations

import pytest

from ridematch_nb.stream.kafka_io import TopicResetError
from ridematch_nb.stream.topics import delete_topic


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
