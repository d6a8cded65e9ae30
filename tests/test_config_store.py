"""The [store] table and the staleness keys of [regions.NAME.carbon] in regions.toml."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbon_scheduler.config import ConfigError, load_config, parse_config
from carbon_scheduler.config.types import StoreSettings

REPO = Path(__file__).resolve().parents[1]
REGION = "[regions.eu-west]\nmax_pods = 4\n"
STATIC = '[regions.eu-west.carbon]\nsource = "static"\nintensity_g_per_kwh = 100\n'


def parse(text: str, path: str = "/etc/carbon/regions.toml"):
    return parse_config(textwrap.dedent(text), path)


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, "regions.toml")
    return str(caught.value).split("\n")


# --- [store] ---------------------------------------------------------------------------


def test_store_defaults_to_file_next_to_config():
    config = parse(REGION)
    assert config.store == StoreSettings(url="/etc/carbon/carbon-history.db")


def test_store_default_stays_relative_for_strings():
    assert parse_config(REGION).store.url == "carbon-history.db"


def test_repo_config_store_is_default():
    config = load_config(REPO / "regions.toml")
    assert config.store == StoreSettings(url=str(REPO / "carbon-history.db"))


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param(['url = "history.db"'], StoreSettings(url="/etc/carbon/history.db"), id="relative-file"),
        pytest.param(['url = "/var/lib/carbon/h.db"'], StoreSettings(url="/var/lib/carbon/h.db"), id="absolute-file"),
        pytest.param(['url = ":memory:"'], StoreSettings(url=":memory:"), id="memory"),
        pytest.param(['url = "sqlite://"'], StoreSettings(url=":memory:"), id="sqlite-memory-url"),
        pytest.param(['url = "sqlite:///data/h.db"'], StoreSettings(url="/etc/carbon/data/h.db"), id="sqlite-relative"),
        pytest.param(['url = "sqlite:////var/h.db"'], StoreSettings(url="/var/h.db"), id="sqlite-absolute"),
        pytest.param(
            ['url = "http://influxdb:8086"'],
            StoreSettings(url="http://influxdb:8086"),
            id="influx-default-database",
        ),
        pytest.param(
            ['url = "https://influx.example:8086/prefix"', 'database = "grid"', 'username = "carbon"',
             'password_env = "INFLUX_PASSWORD"'],
            StoreSettings(url="https://influx.example:8086/prefix", database="grid", username="carbon",
                          password_env="INFLUX_PASSWORD"),
            id="influx-user-password-env",
        ),
        pytest.param(
            ['url = "http://influxdb:8086"', 'username = "carbon"', 'password_file = "secrets/password"'],
            StoreSettings(url="http://influxdb:8086", username="carbon", password_file="/etc/carbon/secrets/password"),
            id="influx-password-file-resolved",
        ),
        pytest.param(
            ['url = "http://influxdb:8086"', 'token_env = "INFLUX_TOKEN"'],
            StoreSettings(url="http://influxdb:8086", token_env="INFLUX_TOKEN"),
            id="influx-token-env",
        ),
        pytest.param(
            ['url = "http://influxdb:8086"', 'token_file = "/run/secrets/token"'],
            StoreSettings(url="http://influxdb:8086", token_file="/run/secrets/token"),
            id="influx-token-file",
        ),
    ],
)
def test_store_values(lines, expected):
    config = parse(REGION + "[store]\n" + "\n".join(lines) + "\n")
    assert config.store == expected


BROKEN_STORE = [
    pytest.param(
        ['url = ""'],
        'regions.toml:4: store.url: must be a file path ("carbon-history.db"), ":memory:", sqlite:///relative/path, '
        'sqlite:////absolute/path or an InfluxDB URL (http://host:8086), got ""',
        id="empty-url",
    ),
    pytest.param(
        ['url = "ftp://host/file"'],
        "regions.toml:4: store.url: unknown scheme 'ftp'; use a file path (\"carbon-history.db\"), \":memory:\", "
        "sqlite:///relative/path, sqlite:////absolute/path or an InfluxDB URL (http://host:8086), "
        'got "ftp://host/file"',
        id="unknown-scheme",
    ),
    pytest.param(
        ['url = "sqlite://host/h.db"'],
        "regions.toml:4: store.url: a sqlite: URL must not name a host; use sqlite:///relative/path or "
        'sqlite:////absolute/path, got "sqlite://host/h.db"',
        id="sqlite-host",
    ),
    pytest.param(
        ['url = "http://carbon:hunter2@influxdb:8086"'],
        "regions.toml:4: store.url: must not contain credentials; set username and password_env or "
        "password_file in [store], so that no secret is written in this file, got "
        '"http://carbon:***@influxdb:8086"',
        id="credentials-in-url",
    ),
    pytest.param(
        ['url = "http://influxdb:8086/?u=carbon&p=hunter2"'],
        "regions.toml:4: store.url: must not have a query string or fragment; set the database with the "
        'database key, got "http://influxdb:8086/?u=carbon&p=***"',
        id="password-in-query",
    ),
    pytest.param(
        ['url = "ftp://carbon:hunter2@host/file"'],
        "regions.toml:4: store.url: unknown scheme 'ftp'; use a file path (\"carbon-history.db\"), \":memory:\", "
        "sqlite:///relative/path, sqlite:////absolute/path or an InfluxDB URL (http://host:8086), "
        'got "ftp://carbon:***@host/file"',
        id="password-in-unknown-scheme",
    ),
    pytest.param(
        ['url = "http://influxdb:8086/?db=carbon"'],
        "regions.toml:4: store.url: must not have a query string or fragment; set the database with the "
        'database key, got "http://influxdb:8086/?db=carbon"',
        id="query-in-url",
    ),
    pytest.param(
        ['url = "http://:8086"'],
        'regions.toml:4: store.url: must name a host, as in http://influxdb:8086, got "http://:8086"',
        id="no-host",
    ),
    pytest.param(
        ['url = "http://influxdb:80x6"'],
        'regions.toml:4: store.url: has an invalid port; write it as http://host:8086, got "http://influxdb:80x6"',
        id="bad-port",
    ),
    pytest.param(
        ['url = "history.db"', 'database = "grid"'],
        "regions.toml:5: store.database: applies to an InfluxDB url (http:// or https://) only, not to the "
        "SQLite store history.db; remove it, or set url to an InfluxDB URL",
        id="database-with-sqlite",
    ),
    pytest.param(
        ['url = "http://influxdb:8086"', 'password_env = "P"'],
        "regions.toml:3: store.username: missing username; add it to [store] (line 3) for the password to be used",
        id="password-without-username",
    ),
    pytest.param(
        ['url = "http://influxdb:8086"', 'username = "carbon"'],
        "regions.toml:5: store.username: needs a password: add password_env (an environment variable name) "
        "or password_file (a file such as a mounted Secret)",
        id="username-without-password",
    ),
    pytest.param(
        ['url = "http://influxdb:8086"', 'token_env = "T"', 'token_file = "t"'],
        "regions.toml:6: store.token_file: conflicts with token_env; give only one of them",
        id="token-env-and-file",
    ),
    pytest.param(
        ['url = "http://influxdb:8086"', 'token_env = "T"', 'username = "u"', 'password_env = "P"'],
        "regions.toml:5: store.token_env: conflicts with username and password; authenticate with either a "
        "token (InfluxDB 2.x and 3.x) or a username and password (InfluxDB 1.x)",
        id="token-and-password",
    ),
    pytest.param(
        ['url = "http://influxdb:8086"', 'token_env = "1TOKEN"'],
        "regions.toml:5: store.token_env: must be an environment variable name: letters, digits and '_', "
        'not starting with a digit, got "1TOKEN"',
        id="invalid-variable-name",
    ),
    pytest.param(
        ['url = "http://influxdb:8086"', 'password = "hunter2"'],
        "regions.toml:5: store.password: unknown key (did you mean password_env?); allowed: database, "
        "password_env, password_file, token_env, token_file, url, username",
        id="plain-password-rejected",
    ),
]


@pytest.mark.parametrize(("lines", "expected"), BROKEN_STORE)
def test_broken_store_message(lines, expected):
    errors = errors_of(REGION + "[store]\n" + "\n".join(lines) + "\n")
    assert expected in errors, errors
    assert not any("hunter2" in error for error in errors), errors


def test_carbon_base_url_password_masked():
    carbon = (
        '[regions.eu-west.carbon]\nsource = "electricitymaps"\nzone = "GB"\n'
        'base_url = "ftp://user:hunter2@api.example.com/?token=hunter2"\n'
    )
    errors = errors_of(REGION + carbon)
    assert any('got "ftp://user:***@api.example.com/?token=***"' in error for error in errors), errors
    assert not any("hunter2" in error for error in errors), errors


def test_store_must_be_table():
    assert errors_of('store = "history.db"\n' + REGION) == [
        'regions.toml:1: store: must be a table, got "history.db"'
    ]


# --- staleness keys of a carbon source -----------------------------------------------------


def test_carbon_staleness_keys_read():
    carbon = parse(REGION + STATIC + "stale_after_seconds = 7200\npoll_interval_seconds = 30\n").regions[0].carbon
    assert carbon is not None
    assert carbon.stale_after_seconds == 7200.0
    assert carbon.poll_interval_seconds == 30.0


def test_carbon_staleness_keys_default_to_none():
    carbon = parse(REGION + STATIC).regions[0].carbon
    assert carbon is not None
    assert carbon.stale_after_seconds is None
    assert carbon.poll_interval_seconds is None


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param(
            "stale_after_seconds = 0\n",
            ["regions.toml:6: regions.eu-west.carbon.stale_after_seconds: must be a number > 0, got 0"],
            id="zero-limit",
        ),
        pytest.param(
            'poll_interval_seconds = "1m"\n',
            ['regions.toml:6: regions.eu-west.carbon.poll_interval_seconds: must be a number > 0, got "1m"'],
            id="text-interval",
        ),
        pytest.param(
            "stale_after_seconds = 30\npoll_interval_seconds = 60\n",
            [
                "regions.toml:6: regions.eu-west.carbon.stale_after_seconds: must be greater than "
                "poll_interval_seconds = 60, or the region would count as stale between two successful polls, got 30"
            ],
            id="limit-below-interval",
        ),
    ],
)
def test_broken_staleness_keys(lines, expected):
    assert errors_of(REGION + STATIC + lines) == expected


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40))
def test_any_store_url_gives_settings_or_config_error(url):
    text = REGION + "[store]\nurl = " + '"' + url.replace("\\", "\\\\").replace('"', '\\"') + '"\n'
    try:
        config = parse_config(text, "/etc/carbon/regions.toml")
    except ConfigError as error:
        assert "store.url" in str(error) or "invalid TOML" in str(error)
        return
    assert isinstance(config.store.url, str)
    assert config.store.url
