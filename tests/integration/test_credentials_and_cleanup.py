"""Review findings of issue 11 on the real stack: credentials, causes, no orphans."""

from __future__ import annotations

import threading

import psutil
import pytest
import redis

from ridematch_nb.features.redis_io import RedisUnavailable, check_redis
from ridematch_nb.lake import etl
from ridematch_nb.lake.storage import Lake, S3Unavailable
from ridematch_nb.ports import free_port
from ridematch_nb.sim.world import WorldParams
from ridematch_nb.stream import generate
from ridematch_nb.stream.kafka_io import KafkaUnavailable, connect_producer


def test_the_stack_redis_has_a_password_from_the_secrets_file(settings):
    assert settings.redis_password and len(settings.redis_password) >= 20
    assert settings.redis_password not in settings.redis_address
    assert redis.Redis.from_url(settings.redis_url).ping()


def test_the_stack_writes_the_match_services_admin_token_beside_its_keys(settings):
    from ridematch_nb.config import ADMIN_TOKEN_KEY, read_env_file

    written = read_env_file(settings.secrets_file)
    assert settings.admin_token and len(settings.admin_token) >= 20
    assert written[ADMIN_TOKEN_KEY] == settings.admin_token
    assert settings.admin_token not in repr(settings)
    assert written[ADMIN_TOKEN_KEY] not in (
        settings.redis_password,
        written["AWS_SECRET_ACCESS_KEY"],
    )


@pytest.mark.parametrize("who", ["anonymous", "wrong-password"])
def test_redis_refuses_a_client_without_valid_credentials(settings, who):
    url = f"redis://127.0.0.1:{settings.redis_port}/0"
    if who == "wrong-password":
        url = f"redis://:not-the-password@127.0.0.1:{settings.redis_port}/0"
    client = redis.Redis.from_url(url)
    with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
        client.get("anything")
    with pytest.raises(RedisUnavailable) as err:
        check_redis(settings.with_overrides(redis_url=url))
    said = str(err.value)
    assert "not reachable" not in said  # it answered: the problem is the credentials
    assert ("refused our credentials" if who == "wrong-password" else "requires a password") in (
        said
    )
    assert "not-the-password" not in said


def test_an_unreachable_redis_is_named_as_such(settings):
    dead = settings.with_overrides(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(RedisUnavailable, match="not reachable") as err:
        check_redis(dead)
    assert err.value.__cause__ is not None


def test_s3_and_kafka_errors_keep_their_cause(settings):
    dead_s3 = settings.with_overrides(s3_endpoint=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(S3Unavailable) as err:
        Lake(dead_s3).put("tests/x", b"x")
    assert err.value.__cause__ is not None
    dead_kafka = settings.with_overrides(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    with pytest.raises(KafkaUnavailable) as err:
        connect_producer(dead_kafka, attempts=1)
    assert err.value.__cause__ is not None


def test_an_etl_that_cannot_join_leaves_no_writer_process_behind(settings):
    dead = settings.with_overrides(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(KafkaUnavailable):
        etl.run(dead, group="never-joins", prefix="tests/never", progress=False)
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []


def test_a_backfill_whose_topic_setup_fails_closes_its_producer(settings, monkeypatch, unique):
    def refuse(*args, **kwargs):
        raise KafkaUnavailable("topic set-up failed (injected)")

    monkeypatch.setattr(generate, "ensure_topic", refuse)
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(KafkaUnavailable, match="injected"):
        generate.backfill(settings, WorldParams(n_drivers=5, n_riders=5), 0.01, topic=unique)
    producers = [
        t
        for t in threading.enumerate()
        if t.ident not in before and "kafka" in t.name.lower() and t.is_alive()
    ]
    assert producers == []
