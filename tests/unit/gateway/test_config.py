from pathlib import Path

import pytest

from gateway.config import load_settings, parse_listen
from gateway.errors import ConfigError


def test_defaults_use_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, environ={})
    assert settings.default_retention_days == 7
    assert settings.effective_database_url == f"sqlite:///{tmp_path.resolve()}/blindpost.db"
    assert settings.sftp_listen == "127.0.0.1:2222"


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    (tmp_path / "blindpost.toml").write_text('lockout_threshold = 3\nsftp_listen = "0.0.0.0:22"\n')
    settings = load_settings(data_dir=tmp_path, environ={"BLINDPOST_LOCKOUT_THRESHOLD": "4"},
                             overrides={"sftp_listen": "127.0.0.1:0"})
    assert settings.lockout_threshold == 4
    assert settings.sftp_listen == "127.0.0.1:0"


def test_data_dir_from_environment(tmp_path: Path) -> None:
    settings = load_settings(environ={"BLINDPOST_DATA_DIR": str(tmp_path)})
    assert settings.data_dir == tmp_path


def test_explicit_data_dir_beats_environment(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "a", environ={"BLINDPOST_DATA_DIR": "/nope"})
    assert settings.data_dir == tmp_path / "a"


@pytest.mark.parametrize(("environ", "message"), [
    ({"BLINDPOST_LOCKOUT_THRESHOLD": "many"}, "lockout_threshold (BLINDPOST_LOCKOUT_THRESHOLD): "
                                               "expected an integer"),
    ({"BLINDPOST_LOCKOUT_THRESHOLD": "0"}, "lockout_threshold: must be a positive integer"),
    ({"BLINDPOST_AUDIT_SYSLOG": "maybe"}, "expected true or false"),
    ({"BLINDPOST_NO_SUCH_THING": "1"}, "BLINDPOST_NO_SUCH_THING: unknown setting"),
    ({"BLINDPOST_LOG_LEVEL": "loud"}, "log_level: expected one of debug, info, warning, error"),
    ({"BLINDPOST_SFTP_LISTEN": "localhost"}, "sftp_listen: expected HOST:PORT"),
    ({"BLINDPOST_DEFAULT_RETENTION_DAYS": "90"}, "must not exceed max_retention_days"),
    ({"BLINDPOST_SHUTDOWN_DRAIN_SECONDS": "-1"}, "shutdown_drain_seconds: must be 0"),
    ({"BLINDPOST_SQLITE_BUSY_TIMEOUT_SECONDS": "0"}, "sqlite_busy_timeout_seconds: must be a "
                                                     "positive integer"),
])
def test_invalid_environment_names_the_key(tmp_path: Path, environ: dict[str, str],
                                           message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(data_dir=tmp_path, environ=environ)
    assert message in str(info.value)


def test_unknown_key_in_file(tmp_path: Path) -> None:
    (tmp_path / "blindpost.toml").write_text("retention = 7\n")
    with pytest.raises(ConfigError, match="unknown setting 'retention'; accepted: "):
        load_settings(data_dir=tmp_path, environ={})


def test_wrong_type_in_file(tmp_path: Path) -> None:
    (tmp_path / "blindpost.toml").write_text('lockout_minutes = "soon"\n')
    with pytest.raises(ConfigError, match=r"lockout_minutes .*expected an integer"):
        load_settings(data_dir=tmp_path, environ={})


def test_invalid_toml(tmp_path: Path) -> None:
    (tmp_path / "blindpost.toml").write_text("this is = = not toml\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(data_dir=tmp_path, environ={})


def test_drain_time_defaults_to_ten_seconds_and_may_be_zero(tmp_path: Path) -> None:
    assert load_settings(data_dir=tmp_path, environ={}).shutdown_drain_seconds == 10
    settings = load_settings(data_dir=tmp_path, environ={"BLINDPOST_SHUTDOWN_DRAIN_SECONDS": "0"})
    assert settings.shutdown_drain_seconds == 0


def test_insecure_switches_are_listed(tmp_path: Path) -> None:
    assert load_settings(data_dir=tmp_path, environ={}).insecure_switches == []
    on = load_settings(data_dir=tmp_path,
                       environ={"BLINDPOST_INSECURE_SINGLE_ADMIN_KEY_APPROVAL": "true"})
    assert on.insecure_switches == ["insecure_single_admin_key_approval"]


def test_parse_listen_ipv6() -> None:
    assert parse_listen("[::1]:2222") == ("::1", 2222)
    with pytest.raises(ConfigError):
        parse_listen("127.0.0.1:99999")
