"""The three servers, used for real through the configured endpoints and keys."""

import json
import time

import pytest
import redis
from botocore.exceptions import ClientError
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from ridematch_nb.lake.storage import s3_client
from ridematch_nb.stream.group_timing import KAFKA_HEARTBEAT_MS, KAFKA_SESSION_TIMEOUT_MS


def _consumer(settings, group, **kw):
    return KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=KAFKA_SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=KAFKA_HEARTBEAT_MS,
        **kw,
    )


def _poll_until(consumer, n, timeout_s=60):
    got, deadline = [], time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500, max_records=n - len(got)).values():
            got.extend(records)
    return got


def test_kafka_group_resumes_after_committed_offset_across_broker_restart(own_broker, unique):
    settings = own_broker.settings
    topic, group = f"test-kafka-{unique}", f"g-{unique}"
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    admin.close()

    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        key_serializer=str.encode,
        value_serializer=lambda v: json.dumps(v).encode(),
    )
    futures = [producer.send(topic, key=f"driver_{i % 20}", value={"i": i}) for i in range(60)]
    producer.flush()
    producer.close()
    metas = [f.get(timeout=10) for f in futures]
    assert len({m.partition for m in metas}) >= 2  # keys spread over partitions

    first = _consumer(settings, group)
    first.subscribe([topic])
    part1 = _poll_until(first, 30)
    assert len(part1) == 30
    first.commit()
    committed = {tp.partition: first.committed(tp) for tp in first.assignment()}
    first.close()

    own_broker.restart("kafka")

    second = _consumer(settings, group)
    tps = [TopicPartition(topic, p) for p in range(3)]
    assert {p: second.committed(TopicPartition(topic, p)) for p in committed} == committed
    second.subscribe([topic])
    part2 = _poll_until(second, 30)
    second.close()
    seen1 = {(r.partition, r.offset) for r in part1}
    seen2 = {(r.partition, r.offset) for r in part2}
    assert not seen1 & seen2, "the group re-read records it had committed"
    assert sorted(json.loads(r.value)["i"] for r in part1 + part2) == list(range(60))
    # keyed records keep their key's partition
    by_key = {}
    for r in part1 + part2:
        by_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(parts) == 1 for parts in by_key.values())

    # the earlier records are still readable from the beginning after the restart
    reader = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    reader.assign(tps)
    reader.seek_to_beginning()
    again = _poll_until(reader, 60)
    reader.close()
    assert len(again) == 60


def test_s3_put_list_get_with_configured_keys(settings, unique):
    client = s3_client(settings)
    key = f"tests/{unique}/hello.txt"
    client.put_object(Bucket=settings.bucket, Key=key, Body=b"hello ridematch")
    listed = client.list_objects_v2(Bucket=settings.bucket, Prefix=f"tests/{unique}/")
    assert [o["Key"] for o in listed.get("Contents", [])] == [key]
    body = client.get_object(Bucket=settings.bucket, Key=key)["Body"].read()
    assert body == b"hello ridematch"


@pytest.mark.parametrize("who", ["anonymous", "wrong-secret"])
def test_s3_refuses_requests_without_valid_credentials(settings, unique, who):
    s3_client(settings).put_object(Bucket=settings.bucket, Key=f"tests/{unique}", Body=b"x")
    if who == "anonymous":
        client = s3_client(settings, credentials=False)
    else:
        client = s3_client(settings.with_overrides(aws_secret_access_key="not-the-secret"))
    for call in (
        lambda: client.get_object(Bucket=settings.bucket, Key=f"tests/{unique}"),
        lambda: client.list_objects_v2(Bucket=settings.bucket),
        lambda: client.put_object(Bucket=settings.bucket, Key=f"tests/{unique}-2", Body=b"y"),
    ):
        with pytest.raises(ClientError) as err:
            call()
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] in (401, 403)


def test_redis_set_get_through_configured_url(settings, unique):
    client = redis.Redis.from_url(settings.redis_url)
    client.set(f"test:{unique}", "ok", ex=60)
    assert client.get(f"test:{unique}") == b"ok"
    assert client.connection_pool.connection_kwargs["port"] == settings.redis_port
