from pathlib import Path

import pytest

from ridematch_nb.config import (
    ConfigError,
    load_settings,
    redis_url_with_password,
    with_stack_redis_password,
)

LOCAL = "params/local.yaml"


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_local_profile_reads_endpoints_from_the_file():
    s = load_settings(LOCAL, env={})
    assert s.topic == "ridematch-events"
    assert s.bucket == "ridematch-raw"
    assert s.kafka_port == int(s.kafka_bootstrap.rsplit(":", 1)[1])
    assert s.stack is not None and s.stack.data_dir.is_absolute()


def test_environment_overrides_params():
    env = {
        "RIDEMATCH_KAFKA_BOOTSTRAP": "127.0.0.1:29999",
        "RIDEMATCH_TOPIC": "other-topic",
        "RIDEMATCH_S3_ENDPOINT": "http://127.0.0.1:1234",
        "RIDEMATCH_REDIS_URL": "redis://127.0.0.1:7777/2",
        "RIDEMATCH_BUCKET": "b2",
    }
    s = load_settings(LOCAL, env=env)
    assert (s.kafka_bootstrap, s.topic, s.s3_endpoint, s.redis_url, s.bucket) == (
        "127.0.0.1:29999",
        "other-topic",
        "http://127.0.0.1:1234",
        "redis://127.0.0.1:7777/2",
        "b2",
    )
    assert s.kafka_port == 29999 and s.s3_port == 1234 and s.redis_port == 7777


def test_aws_keys_from_environment_without_secrets_file():
    env = {"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "SECRETTEST"}
    s = load_settings("params/docker.yaml", env=env)
    assert s.s3_credentials() == ("AKIDTEST", "SECRETTEST")
    assert "AKIDTEST" not in repr(s) and "SECRETTEST" not in repr(s)


def test_secrets_file_beats_shell_aws_keys_and_ridematch_beats_both(tmp_path):
    secrets = write(
        tmp_path, "AWS_ACCESS_KEY_ID=local\nAWS_SECRET_ACCESS_KEY=localsecret\n", "s.env"
    )
    params = write(
        tmp_path,
        f"extends: {Path(LOCAL).resolve()}\nservices:\n  secrets_file: {secrets}\n",
    )
    shell = {"AWS_ACCESS_KEY_ID": "shell", "AWS_SECRET_ACCESS_KEY": "shellsecret"}
    assert load_settings(params, env=shell).s3_credentials() == ("local", "localsecret")
    explicit = {
        **shell,
        "RIDEMATCH_AWS_ACCESS_KEY_ID": "mine",
        "RIDEMATCH_AWS_SECRET_ACCESS_KEY": "x",
    }
    assert load_settings(params, env=explicit).s3_credentials() == ("mine", "x")


def test_missing_keys_give_a_clear_error():
    s = load_settings("params/docker.yaml", env={})
    with pytest.raises(ConfigError, match="AWS_ACCESS_KEY_ID"):
        s.s3_credentials()


def test_ci_profile_extends_local_and_changes_only_what_it_names():
    local, ci = load_settings(LOCAL, env={}), load_settings("params/ci.yaml", env={})
    assert ci.topic != local.topic
    assert (ci.kafka_bootstrap, ci.s3_endpoint, ci.redis_url) == (
        local.kafka_bootstrap,
        local.s3_endpoint,
        local.redis_url,
    )


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml does not exist"):
        load_settings(tmp_path / "nope.yaml", env={})


def test_malformed_yaml_names_the_file(tmp_path):
    bad = write(tmp_path, "services: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"{bad.name} is not valid YAML"):
        load_settings(bad, env={})


def test_missing_key_names_file_and_key(tmp_path):
    text = Path(LOCAL).read_text().replace("  redis_url:", "  not_redis_url:")
    bad = write(tmp_path, text)
    with pytest.raises(ConfigError, match=r"p\.yaml: missing key 'services\.redis_url'"):
        load_settings(bad, env={})


def test_mistyped_key_names_file_and_key(tmp_path):
    text = Path(LOCAL).read_text().replace("weed_master_port: 19333", "weed_master_port: lots")
    bad = write(tmp_path, text)
    with pytest.raises(ConfigError, match=r"'stack\.weed_master_port' should be int"):
        load_settings(bad, env={})


def test_endpoint_without_port_is_refused(tmp_path):
    text = Path(LOCAL).read_text().replace('"127.0.0.1:19092"', '"127.0.0.1"')
    with pytest.raises(ConfigError, match=r"services\.kafka_bootstrap"):
        load_settings(write(tmp_path, text), env={})


def test_relative_params_path_does_not_depend_on_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_settings(LOCAL, env={}).topic == "ridematch-events"


def test_redis_password_goes_into_the_url_and_never_into_its_address():
    # any Redis without a password in its URL (the profile's may carry the stack's)
    settings = load_settings(LOCAL, env={}).with_overrides(redis_url="redis://cache.test:6380/0")
    with_pw = with_stack_redis_password(settings, {"RIDEMATCH_REDIS_PASSWORD": "s3cr3t-pw"})
    assert with_pw.redis_password == "s3cr3t-pw"
    assert "s3cr3t-pw" not in with_pw.redis_address and "***" in with_pw.redis_address
    assert with_pw.redis_port == settings.redis_port
    own = settings.with_overrides(redis_url=redis_url_with_password(settings.redis_url, "mine"))
    kept = with_stack_redis_password(own, {"RIDEMATCH_REDIS_PASSWORD": "s3cr3t-pw"})
    assert kept.redis_password == "mine"  # a URL with its own password wins


def test_the_match_service_address_and_admin_token_come_from_the_profile(tmp_path):
    s = load_settings(LOCAL, env={})
    assert s.match_address == ("127.0.0.1", 18000)
    moved = load_settings(LOCAL, env={"RIDEMATCH_MATCH_URL": "http://127.0.0.1:18123/"})
    assert moved.match_address == ("127.0.0.1", 18123)
    secrets = write(tmp_path, "RIDEMATCH_ADMIN_TOKEN=from-file\n", "s.env")
    params = write(
        tmp_path, f"extends: {Path(LOCAL).resolve()}\nservices:\n  secrets_file: {secrets}\n"
    )
    assert load_settings(params, env={}).admin_token == "from-file"
    chosen = load_settings(params, env={"RIDEMATCH_ADMIN_TOKEN": "mine"})
    assert chosen.admin_token == "mine" and "mine" not in repr(chosen)
    text = Path(LOCAL).read_text().replace('"http://127.0.0.1:18000"', '"http://127.0.0.1"')
    with pytest.raises(ConfigError, match=r"services\.match_url"):
        load_settings(write(tmp_path, text), env={})
    unset = write(
        tmp_path,
        "services:\n  kafka_bootstrap: 'h:1'\n  topic: t\n  s3_endpoint: "
        "'http://h:2'\n  s3_region: r\n  bucket: b\n  redis_url: 'redis://h:3/0'\n",
        "u.yaml",
    )
    with pytest.raises(ConfigError, match=r"services\.match_url is not set"):
        load_settings(unset, env={}).match_address  # noqa: B018
