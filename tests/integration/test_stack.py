import socket
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

from ridematch_nb.config import StackSettings
from ridematch_nb.stack.control import LocalStack, StackError
from ridematch_nb.stack.services import LOOPBACK
from tests.helpers.ports import free_weed_port


def test_up_twice_is_harmless(stack):
    before = stack.pids()
    again = stack.up()
    assert {s.name for s in again} == {"s3", "kafka", "redis"}
    assert all(s.reused and s.healthy for s in again)
    assert stack.pids() == before


def test_status_reports_every_service_healthy(stack):
    statuses = {s.name: s for s in stack.status()}
    assert set(statuses) == {"s3", "kafka", "redis"}
    for st in statuses.values():
        assert st.healthy and st.running and st.pid, st
        assert st.rss_mb and st.rss_mb > 0
    assert statuses["kafka"].endpoint == stack.settings.kafka_bootstrap


def test_every_listening_socket_is_on_loopback(stack):
    listening = stack.listening_addresses()
    assert set(listening) == {"s3", "kafka", "redis"}
    for name, addrs in listening.items():
        assert addrs, f"{name} listens nowhere"
        assert all(a.startswith(f"{LOOPBACK}:") for a in addrs), (name, addrs)


def test_the_servers_write_their_logs_into_the_stack_folder_alone(stack):
    pid = stack.pids()["s3"]
    strays = list(Path(tempfile.gettempdir()).glob(f"weed.*.{pid}"))
    assert strays == [], "SeaweedFS wrote log files of its own outside .stack/"
    log = stack.settings.stack.data_dir / "logs" / "s3.log"
    assert "Start Seaweed" in log.read_text(errors="replace")


def test_busy_port_gives_one_clear_error_and_starts_nothing(stack, tmp_path):
    """A second stack on other ports, with its Redis port held by a stranger."""
    base = stack.settings
    redis_port = free_weed_port()
    other = replace(
        base,
        kafka_bootstrap=f"{LOOPBACK}:{free_weed_port()}",
        s3_endpoint=f"http://{LOOPBACK}:{free_weed_port()}",
        redis_url=f"redis://{LOOPBACK}:{redis_port}/0",
        secrets_file=tmp_path / "secrets.env",
        stack=StackSettings(
            tmp_path / "stack", "b", free_weed_port(), free_weed_port(), free_weed_port(), 5
        ),
    )
    with socket.socket() as squatter:
        squatter.bind((LOOPBACK, redis_port))
        squatter.listen()
        second = LocalStack(other)
        with pytest.raises(StackError) as err:
            second.up()
    message = str(err.value)
    assert err.value.service == "redis" and err.value.port == redis_port
    assert f"{LOOPBACK}:{redis_port}" in message and "already in use" in message
    assert "fix:" in message
    assert second.pids() == {}


def test_missing_binary_names_the_service_and_the_fix(stack, tmp_path, monkeypatch):
    import ridematch_nb.stack.services as services

    monkeypatch.setattr(services, "redis_binary", lambda: None)
    other = replace(
        stack.settings,
        redis_url=f"redis://{LOOPBACK}:{free_weed_port()}/0",
        kafka_bootstrap=f"{LOOPBACK}:{free_weed_port()}",
        s3_endpoint=f"http://{LOOPBACK}:{free_weed_port()}",
        secrets_file=tmp_path / "secrets.env",
        stack=StackSettings(
            tmp_path / "stack", "b", free_weed_port(), free_weed_port(), free_weed_port(), 5
        ),
    )
    with pytest.raises(
        StackError, match=r"redis .*binary not found[\s\S]*apt-get install redis-server"
    ):
        LocalStack(other).up()
