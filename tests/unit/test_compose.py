"""docker-compose.yml is checked as configuration: no Docker engine runs here."""

from pathlib import Path

import yaml

from ridematch_nb.config import PROJECT_ROOT, load_settings

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


def test_defines_kafka_minio_redis_with_healthchecks():
    services = COMPOSE["services"]
    for name in ("kafka", "minio", "redis"):
        assert name in services, name
        assert "test" in services[name]["healthcheck"], name


def test_kafka_runs_kraft_and_creates_the_topic():
    kafka = COMPOSE["services"]["kafka"]
    env = kafka["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "broker" in env["KAFKA_PROCESS_ROLES"]
    assert not any("ZOOKEEPER" in k for k in env)
    init = " ".join(str(x) for x in COMPOSE["services"]["kafka-init"]["command"])
    assert "ridematch-events" in init


def test_minio_bucket_is_created_and_keys_come_from_the_environment():
    minio = COMPOSE["services"]["minio"]
    for value in minio["environment"].values():
        assert str(value).startswith("${"), "MinIO keys must come from the environment"
    init = " ".join(str(x) for x in COMPOSE["services"]["minio-init"]["entrypoint"])
    assert "ridematch-raw" in init


def _host_ports(service: str) -> set[int]:
    ports = set()
    for spec in COMPOSE["services"][service].get("ports", []):
        parts = str(spec).split(":")
        ports.add(int(parts[-2]))
    return ports


def test_docker_params_point_at_the_published_ports():
    s = load_settings(Path("params/docker.yaml"), env={})
    assert s.kafka_port in _host_ports("kafka")
    assert s.s3_port in _host_ports("minio")
    assert s.redis_port in _host_ports("redis")
