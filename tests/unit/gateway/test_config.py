from pathlib import Path

import pytest

from gateway.audit.cosignature import CosignatureVerifier
from gateway.config import load_settings, parse_listen
from gateway.errors import ConfigError


def test_defaults_use_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, environ={})
    assert (settings.default_retention, settings.default_retention_seconds) == ("7d", 604800)
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
    ({"BLINDPOST_SHUTDOWN_DRAIN_SECONDS": "-1"}, "shutdown_drain_seconds: must be 0"),
    ({"BLINDPOST_SQLITE_BUSY_TIMEOUT_SECONDS": "0"}, "sqlite_busy_timeout_seconds: must be a "
                                                     "positive integer"),
    ({"BLINDPOST_STORE_URL": "relative/store"}, "store_url: expected file:///ABSOLUTE/PATH"),
    ({"BLINDPOST_STORE_URL": "s3://"}, "store_url: expected"),
    ({"BLINDPOST_STORE_URL": "gs://bucket/x"}, "store_url: expected"),
    ({"BLINDPOST_STORE_URL": "s3://b", "BLINDPOST_S3_PART_SIZE_MIB": "4"},
     "s3_part_size_mib: must be between 5 and 5120"),
    ({"BLINDPOST_STORE_URL": "s3://b", "BLINDPOST_S3_PART_SIZE_MIB": "5"},
     "s3_part_size_mib: 10000 parts of 5 MiB cannot hold an upload of max_upload_mib"),
    ({"BLINDPOST_S3_SSE": "yes"}, "s3_sse: expected one of '', 'AES256', 'aws:kms'"),
    ({"BLINDPOST_S3_SSE_KMS_KEY_ID": "k"}, 's3_sse_kms_key_id: only used with s3_sse = "aws:kms"'),
    ({"BLINDPOST_LOG_FORMAT": "xml"}, "log_format: expected one of text, json"),
    ({"BLINDPOST_METRICS_LISTEN": "9464"}, "metrics_listen: expected HOST:PORT"),
    # Absurd sizes: a retention past any date, a lockout counter beyond a column, a
    # process count no host has.
    ({"BLINDPOST_MAX_RETENTION": "3651d"}, "max_retention: must be at most 3650d, got 3651d"),
    ({"BLINDPOST_MAX_RETENTION_DAYS": str(10**30)}, "max_retention: invalid duration"),
    ({"BLINDPOST_LOCKOUT_MINUTES": str(2**31)}, "lockout_minutes: must be at most 2147483647"),
    ({"BLINDPOST_SFTP_WORKERS": "100000"}, "sftp_workers: must be at most 256"),
    ({"BLINDPOST_DEFAULT_RETENTION_DAYS": "90"}, "must not exceed max_retention (30d)"),
    ({"BLINDPOST_DEFAULT_RETENTION": "0s"}, "default_retention: invalid duration '0s': "
                                            "must be longer than zero"),
    ({"BLINDPOST_MAX_RETENTION": "7x"}, "max_retention: invalid duration '7x': use 90s, 15m"),
    ({"BLINDPOST_MAX_RETENTION": "-3d"}, "max_retention: invalid duration '-3d'"),
    ({"BLINDPOST_MAX_RETENTION_DAYS": "2w"}, "max_retention_days (BLINDPOST_MAX_RETENTION_DAYS): "
                                             "expected a whole number of days"),
    # Notifications: a relay needs a sender; a relay across a network needs STARTTLS; a
    # login needs its password file; a webhook is https (http only to this host) and signed.
    ({"BLINDPOST_NOTIFY_SMTP_HOST": "relay.example.org"}, "notify_smtp_from: set the sender"),
    ({"BLINDPOST_NOTIFY_SMTP_HOST": "relay.example.org",
      "BLINDPOST_NOTIFY_SMTP_FROM": "registry@example.org\nBcc: x@evil.example"},
     "notify_smtp_from: expected a plain e-mail address"),
    ({"BLINDPOST_NOTIFY_SMTP_HOST": "10.1.2.3", "BLINDPOST_NOTIFY_SMTP_FROM": "r@example.org",
      "BLINDPOST_INSECURE_NOTIFY_SMTP_WITHOUT_TLS": "true"},
     "insecure_notify_smtp_without_tls: only for a relay on this host"),
    ({"BLINDPOST_NOTIFY_SMTP_HOST": "relay.example.org", "BLINDPOST_NOTIFY_SMTP_FROM":
      "r@example.org", "BLINDPOST_NOTIFY_SMTP_USER": "blindpost"},
     "notify_smtp_user, notify_smtp_password_file: set both"),
    ({"BLINDPOST_NOTIFY_SMTP_PORT": "70000"}, "notify_smtp_port: must be at most 65535"),
    ({"BLINDPOST_NOTIFY_INTERVAL_SECONDS": "0"}, "notify_interval_seconds: must be a positive"),
    ({"BLINDPOST_NOTIFY_WEBHOOK_URL": "http://hooks.example.org/x",
      "BLINDPOST_NOTIFY_WEBHOOK_SECRET_FILE": "/etc/blindpost/webhook.secret"},
     "notify_webhook_url: expected an https:// URL"),
    ({"BLINDPOST_NOTIFY_WEBHOOK_URL": "https://hooks.example.org/x"},
     "notify_webhook_secret_file: the webhook's requests are signed"),
    ({"BLINDPOST_SFTP_CHANNEL_WINDOW_KIB": "128"},
     "sftp_channel_window_kib: must be at least 256 (one 255 KiB SFTP write must fit)"),
    ({"BLINDPOST_SFTP_RECEIVE_BUDGET_MIB": "0"},
     "sftp_receive_budget_mib: must be at least 1 (the SFTP sessions of a worker process "
     "share it)"),
])
def test_invalid_environment_names_the_key(tmp_path: Path, environ: dict[str, str],
                                           message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(data_dir=tmp_path, environ=environ)
    assert message in str(info.value)


@pytest.mark.parametrize(("written", "seconds"), [
    ('"90s"', 90), ('"15m"', 900), ('"12h"', 43200), ('"2w"', 1209600), ("3", 259200),
    ('"3"', 259200)])
def test_retention_durations(tmp_path: Path, written: str, seconds: int) -> None:
    (tmp_path / "blindpost.toml").write_text(f"default_retention = {written}\n")
    settings = load_settings(data_dir=tmp_path, environ={})
    assert settings.default_retention_seconds == seconds
    assert settings.audited_values()["default_retention"] == settings.default_retention


def test_day_settings_of_earlier_releases_still_work(tmp_path: Path) -> None:
    (tmp_path / "blindpost.toml").write_text("default_retention_days = 2\n"
                                             "max_retention_days = 10\n")
    settings = load_settings(data_dir=tmp_path, environ={"BLINDPOST_MAX_RETENTION": "72h"})
    assert (settings.default_retention, settings.max_retention) == ("2d", "3d")
    (tmp_path / "blindpost.toml").write_text("default_retention_days = 2\n"
                                             'default_retention = "2d"\n')
    with pytest.raises(ConfigError, match="both 'default_retention_days' and "
                                          "'default_retention' are set"):
        load_settings(data_dir=tmp_path, environ={})


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


def test_store_locations(tmp_path: Path) -> None:
    default = load_settings(data_dir=tmp_path, environ={}).store_location
    assert (default.scheme, default.path) == ("file", tmp_path / "store")
    local = load_settings(data_dir=tmp_path, environ={"BLINDPOST_STORE_URL": "file:///srv/bp"})
    assert local.store_location.path == Path("/srv/bp")
    s3 = load_settings(data_dir=tmp_path, environ={"BLINDPOST_STORE_URL": "s3://reg/bp/objs/"})
    assert (s3.store_location.bucket, s3.store_location.prefix) == ("reg", "bp/objs/")
    bare = load_settings(data_dir=tmp_path, environ={"BLINDPOST_STORE_URL": "s3://reg"})
    assert (bare.store_location.bucket, bare.store_location.prefix) == ("reg", "")


def test_the_s3_secret_is_not_in_the_settings_repr(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path,
                             environ={"BLINDPOST_S3_SECRET_ACCESS_KEY": "hunter2-secret"})
    assert settings.s3_secret_access_key == "hunter2-secret"
    assert "hunter2-secret" not in repr(settings)
    assert settings.audited_values()["s3_secret_access_key"] == "***"
    assert "hunter2-secret" not in str(settings.audited_values())




def test_witnesses_from_a_toml_array_or_a_string(tmp_path: Path) -> None:
    key = CosignatureVerifier("witness.example/w1", bytes(32)).key_string()
    other = CosignatureVerifier("witness.example/w2", bytes(range(32))).key_string()
    (tmp_path / "blindpost.toml").write_text(
        f'audit_witnesses = ["https://w1.example/tlog/ {key}", "http://127.0.0.1:7380 {other}"]\n'
        "audit_witness_quorum = 2\n")
    settings = load_settings(data_dir=tmp_path, environ={})
    assert [(w.url, w.name) for w in settings.witnesses] == [
        ("https://w1.example/tlog", "witness.example/w1"),
        ("http://127.0.0.1:7380", "witness.example/w2")]
    from_env = load_settings(data_dir=tmp_path, environ={
        "BLINDPOST_AUDIT_WITNESSES": f"https://w1.example {key}",
        "BLINDPOST_AUDIT_WITNESS_QUORUM": "1"})
    assert len(from_env.witnesses) == 1
    with pytest.raises(ConfigError, match="audit_witness_quorum: 2 is more than the 1"):
        load_settings(data_dir=tmp_path, environ={
            "BLINDPOST_AUDIT_WITNESSES": f"https://w1.example {key}"})
    for bad, message in ((f"ftp://w1.example {key}", "expected 'https://HOST"),
                         ("https://w1.example", "expected 'https://HOST"),
                         ("https://w1.example example.com/x+00000000+AQ==", "witness 1: "),
                         (f"https://a.example {key}, https://b.example {key}", "twice")):
        with pytest.raises(ConfigError, match=message):
            load_settings(data_dir=tmp_path, environ={"BLINDPOST_AUDIT_WITNESSES": bad,
                                                      "BLINDPOST_AUDIT_WITNESS_QUORUM": "1"})


def test_notification_settings_that_work(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, environ={
        "BLINDPOST_NOTIFY_SMTP_HOST": "localhost", "BLINDPOST_NOTIFY_SMTP_FROM": "r@example.org",
        "BLINDPOST_INSECURE_NOTIFY_SMTP_WITHOUT_TLS": "yes",
        "BLINDPOST_NOTIFY_WEBHOOK_URL": "http://127.0.0.1:9000/hook",
        "BLINDPOST_NOTIFY_WEBHOOK_SECRET_FILE": "/etc/blindpost/webhook.secret"})
    assert settings.insecure_switches == ["insecure_notify_smtp_without_tls"]
    assert settings.notify_smtp_port == 587
