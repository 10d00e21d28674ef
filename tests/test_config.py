"""Settings.from_env: defaults, every documented variable, `.env`, errors and secret hiding."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from service.config import ConfigError, Secret, Settings, read_dotenv

P = "TEMPLATE_SYNC_"


def from_env(environ: dict[str, str], dotenv: Path | None = None) -> Settings:
    return Settings.from_env(environ, dotenv=dotenv)


def values(secrets: tuple[Secret, ...]) -> list[str]:
    return [secret.value for secret in secrets]


def test_defaults_without_any_variable() -> None:
    settings = from_env({})
    assert settings.database_url == "sqlite:///data/template-sync.db"
    assert settings.meta_app_secrets == ()
    assert settings.meta_verify_token is None
    assert settings.graph_url == "https://graph.facebook.com/v25.0"
    assert settings.encryption_keys == ()
    assert settings.data_dir == Path("data")
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.poll_enabled is True
    assert (settings.poll_tick_s, settings.poll_grace_s, settings.poll_interval_s) == (
        30.0,
        1800.0,  # design.md says 300; see README "Polling fallback" for why 1800
        1800.0,
    )
    assert settings.max_body_bytes == 4194304
    assert settings.log_format in {"text", "json"}
    assert settings.log_level == "INFO"


def test_every_documented_variable_is_parsed() -> None:
    settings = from_env(
        {
            P + "DATABASE_URL": "postgresql://app:pw@db.internal:5433/sync",
            P + "META_APP_SECRET": "current-secret,previous-secret",
            P + "META_VERIFY_TOKEN": "handshake-token",
            P + "GRAPH_URL": "http://127.0.0.1:9999/v25.0",
            P + "ENCRYPTION_KEYS": "key-one,key-two",
            P + "DATA_DIR": "/var/lib/template-sync",
            P + "HOST": "0.0.0.0",  # noqa: S104 (a value under test, nothing listens)
            P + "PORT": "9001",
            P + "POLL_ENABLED": "false",
            P + "POLL_TICK_S": "0.5",
            P + "POLL_GRACE_S": "60",
            P + "POLL_INTERVAL_S": "900.5",
            P + "MAX_BODY_BYTES": "1024",
            P + "DISPATCH_PER_TARGET": "16",
            P + "LOG_FORMAT": "text",
            P + "LOG_LEVEL": "debug",
        }
    )
    assert settings.database_url == "postgresql://app:pw@db.internal:5433/sync"
    assert values(settings.meta_app_secrets) == ["current-secret", "previous-secret"]
    assert settings.meta_verify_token == Secret("handshake-token")
    assert settings.graph_url == "http://127.0.0.1:9999/v25.0"
    assert values(settings.encryption_keys) == ["key-one", "key-two"]
    assert settings.data_dir == Path("/var/lib/template-sync")
    assert settings.host == "0.0.0.0"  # noqa: S104
    assert settings.port == 9001 and isinstance(settings.port, int)
    assert settings.poll_enabled is False
    assert settings.poll_tick_s == 0.5
    assert settings.poll_grace_s == 60.0 and isinstance(settings.poll_grace_s, float)
    assert settings.poll_interval_s == 900.5
    assert settings.max_body_bytes == 1024 and isinstance(settings.max_body_bytes, int)
    assert settings.dispatch_per_target == 16
    assert settings.log_format == "text"
    assert settings.log_level == "debug"


def test_other_variables_are_ignored() -> None:
    settings = from_env({"DATABASE_URL": "mysql://x", "PORT": "nope", P + "UNKNOWN": "1"})
    assert settings == from_env({})


def test_empty_variables_mean_unset() -> None:
    settings = from_env({P + "PORT": "", P + "META_VERIFY_TOKEN": "", P + "META_APP_SECRET": ""})
    assert settings.port == 8000
    assert settings.meta_verify_token is None
    assert settings.meta_app_secrets == ()


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "yes", "on", " True "])
def test_true_booleans(raw: str) -> None:
    assert from_env({P + "POLL_ENABLED": raw}).poll_enabled is True


@pytest.mark.parametrize("raw", ["0", "false", "False", "no", "OFF"])
def test_false_booleans(raw: str) -> None:
    assert from_env({P + "POLL_ENABLED": raw}).poll_enabled is False


def test_comma_separated_values_are_stripped_and_ordered() -> None:
    settings = from_env(
        {
            P + "META_APP_SECRET": "  new-secret , old-secret ,, ,",
            P + "ENCRYPTION_KEYS": "\tfirst-key,second-key \n",
        }
    )
    assert values(settings.meta_app_secrets) == ["new-secret", "old-secret"]
    assert values(settings.encryption_keys) == ["first-key", "second-key"]
    assert from_env({P + "META_APP_SECRET": " , "}).meta_app_secrets == ()


def test_dotenv_is_read(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# a comment line\n"
        "\n"
        f"{P}PORT=9100\n"
        f'{P}META_VERIFY_TOKEN="double quoted value"\n'
        f"{P}META_APP_SECRET='single,quoted'\n"
        f"export {P}HOST=10.0.0.7\n"
        f"  {P}LOG_LEVEL = WARNING  \n"
        f"{P}ENCRYPTION_KEYS=abc=,def==\n"
        "a line without an equals sign\n"
        f"#{P}GRAPH_URL=http://commented.out\n",
        encoding="utf-8",
    )
    settings = from_env({}, dotenv)
    assert settings.port == 9100
    assert settings.meta_verify_token == Secret("double quoted value")
    assert values(settings.meta_app_secrets) == ["single", "quoted"]
    assert settings.host == "10.0.0.7"
    assert settings.log_level == "WARNING"
    assert values(settings.encryption_keys) == ["abc=", "def=="]
    assert settings.graph_url == "https://graph.facebook.com/v25.0"


def test_read_dotenv_keeps_unbalanced_quotes_and_ignores_missing_files(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("A=\"abc'\nB=\"\nC=''\nD=a=b=c\n", encoding="utf-8")
    assert read_dotenv(dotenv) == {"A": "\"abc'", "B": '"', "C": "", "D": "a=b=c"}
    assert read_dotenv(tmp_path / "missing.env") == {}


def test_environment_wins_over_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"{P}PORT=9100\n{P}HOST=10.0.0.7\n", encoding="utf-8")
    settings = from_env({P + "PORT": "9200"}, dotenv)
    assert settings.port == 9200
    assert settings.host == "10.0.0.7"


def test_dotenv_defaults_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(f"{P}PORT=9300\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({}).port == 9300
    assert Settings.from_env({}, dotenv=None).port == 8000


def test_explicit_environ_replaces_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(P + "PORT", "9400")
    assert from_env({}).port == 8000


def test_process_environment_is_used_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(P + "PORT", "9400")
    assert Settings.from_env(dotenv=tmp_path / "none.env").port == 9400


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("PORT", "http"),
        ("PORT", "-1"),
        ("PORT", "80.5"),
        ("MAX_BODY_BYTES", "0"),
        ("MAX_BODY_BYTES", "4MB"),
        ("MAX_BODY_BYTES", "1e6"),
        ("MAX_HEADER_BYTES", "100"),  # not even a request line and Host
        ("REQUEST_TIMEOUT_S", "0"),
        ("LIMIT_CONCURRENCY", "1"),  # the connection itself counts: every one refused
        ("BACKLOG", "0"),
        ("POLL_TICK_S", "0"),
        ("POLL_TICK_S", "30s"),
        ("POLL_GRACE_S", "-1"),
        ("POLL_INTERVAL_S", "half an hour"),
        ("POLL_ENABLED", "maybe"),
        ("POLL_ENABLED", "2"),
        ("LOG_FORMAT", "xml"),
        ("LOG_LEVEL", "verbose"),
        ("DATABASE_URL", "mysql://user@host/db"),
        ("DATABASE_URL", "sqlite://relative.db"),
        ("DATABASE_URL", "template-sync.db"),
    ],
)
def test_bad_values_raise_config_error_naming_the_variable(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=P + name):
        from_env({P + name: raw})


def test_bad_value_in_dotenv_is_reported_too(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"{P}POLL_GRACE_S=soon\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"{P}POLL_GRACE_S.*'soon'"):
        from_env({}, dotenv)


def test_nan_is_not_a_number_of_seconds() -> None:
    with pytest.raises(ConfigError, match=P + "POLL_TICK_S"):
        from_env({P + "POLL_TICK_S": "nan"})


def test_port_above_65535_is_rejected() -> None:
    with pytest.raises(ConfigError, match=P + "PORT"):
        from_env({P + "PORT": "70000"})


def test_accepted_database_urls() -> None:
    for url in ("sqlite:////abs/path.db", "postgresql://u@h/db", "postgres://u@h:5432/db"):
        assert from_env({P + "DATABASE_URL": url}).database_url == url


def test_secret_hides_its_value() -> None:
    secret = Secret("hunter2-value")
    assert secret.value == "hunter2-value"
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}"):
        assert "hunter2" not in shown


def test_settings_repr_and_str_never_show_secrets() -> None:
    settings = from_env(
        {
            P + "META_APP_SECRET": "app-secret-one,app-secret-two",
            P + "META_VERIFY_TOKEN": "verify-token-value",
            P + "ENCRYPTION_KEYS": "encryption-key-value",
        }
    )
    for shown in (repr(settings), str(settings), f"{settings}"):
        for secret in ("app-secret-one", "app-secret-two", "verify-token-value", "encryption-key"):
            assert secret not in shown
        assert "Secret(" in shown  # the fields are there, only their values are masked


def test_settings_repr_hides_the_database_password() -> None:
    settings = from_env({P + "DATABASE_URL": "postgresql://app:db-password-value@db/sync"})
    assert "db-password-value" not in repr(settings)


def test_settings_are_frozen() -> None:
    settings = from_env({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]


def test_unset_variables() -> None:
    everything = [P + "META_APP_SECRET", P + "META_VERIFY_TOKEN", P + "ENCRYPTION_KEYS"]
    assert from_env({}).unset_variables() == everything
    partial = from_env({P + "META_APP_SECRET": "s", P + "ENCRYPTION_KEYS": "k"})
    assert partial.unset_variables() == [P + "META_VERIFY_TOKEN"]
    complete = from_env(
        {P + "META_APP_SECRET": "s", P + "META_VERIFY_TOKEN": "t", P + "ENCRYPTION_KEYS": "k"}
    )
    assert complete.unset_variables() == []
