"""The ETL's commit decision when the group is moving (no servers: the consumer is a stub
that refuses the commit the way kafka-python does during a rebalance)."""

import pytest
from kafka.errors import CommitFailedError, RebalanceInProgressError

from ridematch_nb.lake.etl import ETL


class RefusingConsumer:
    def __init__(self, error: Exception) -> None:
        self.error, self.calls = error, 0

    def commit(self, offsets) -> None:
        self.calls += 1
        raise self.error


def etl_with(consumer) -> ETL:
    etl = ETL.__new__(ETL)  # only what _commit reads
    etl.topic, etl.consumer = "t", consumer
    return etl


def test_a_commit_during_a_rebalance_gives_the_chunk_up_at_once():
    """Only the next poll() completes a rebalance, so retrying cannot succeed; the chunk
    is given up (its manifest left to the partition's next owner) rather than fatal."""
    consumer = RefusingConsumer(RebalanceInProgressError("rebalancing"))
    with pytest.raises(CommitFailedError):
        etl_with(consumer)._commit(0, 10)
    assert consumer.calls == 1


def test_a_commit_refused_for_good_is_not_retried():
    consumer = RefusingConsumer(CommitFailedError())
    with pytest.raises(CommitFailedError):
        etl_with(consumer)._commit(0, 10)
    assert consumer.calls == 1
