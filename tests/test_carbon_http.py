"""The shared HTTP layer of the provider sources: retries, Retry-After, cache, errors."""

from __future__ import annotations

import asyncio
import socket
from email.utils import format_datetime
from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from carbon_scheduler.carbon.errors import (
    SourceAuthError,
    SourceDataError,
    SourceError,
    SourceRequestError,
    SourceUnavailable,
)
from carbon_scheduler.carbon.http import (
    HttpSettings,
    ProviderHttp,
    SecretRef,
    backoff_delay,
    parse_retry_after,
    redact,
    time_chunks,
)
from tests.carbon_mock import (  # noqa: F401  (fixtures)
    FakeClock,
    MockServer,
    RecordingSleep,
    http_client,
    mock_server,
    reply_after,
    reply_json,
    reply_text,
)

NOW = 1_700_000_000.0
SECRET = "sk-live-0123456789abcdef"


def make_http(
    server: MockServer,
    client,
    *,
    clock: FakeClock | None = None,
    sleep: RecordingSleep | None = None,
    **settings,
) -> ProviderHttp:
    defaults = {"max_attempts": 3, "backoff_initial_seconds": 1.0, "backoff_max_seconds": 8.0}
    defaults.update(settings)
    return ProviderHttp(
        provider="testprovider",
        settings=HttpSettings(base_url=server.url, **defaults),
        clock=clock or FakeClock(NOW),
        context={"region": "eu-west", "zone": "DE"},
        client=client,
        secrets=lambda: (SECRET,),
        auth_hint="check the API key in environment variable TEST_KEY (api_key_env)",
        sleep=sleep or RecordingSleep(),
        random=lambda: 0.5,
    )


# Pure helpers.


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("120", 120.0, id="seconds"),
        pytest.param(" 5 ", 5.0, id="seconds-with-spaces"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param(
            format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True),
            30.0,
            id="http-date",
        ),
        pytest.param(
            format_datetime(datetime.fromtimestamp(NOW - 30, UTC), usegmt=True),
            0.0,
            id="date-in-past",
        ),
        pytest.param("-5", None, id="negative"),
        pytest.param("1.5", None, id="fraction"),
        pytest.param("soon", None, id="text"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_parse_retry_after(header, expected):
    assert parse_retry_after(header, now=NOW) == expected


@pytest.mark.parametrize(
    ("attempt", "draw", "expected"),
    [
        pytest.param(1, 0.0, 0.5, id="first-low"),
        pytest.param(1, 1.0, 1.0, id="first-high"),
        pytest.param(3, 0.5, 3.0, id="third-middle"),
        pytest.param(10, 1.0, 8.0, id="capped"),
        pytest.param(10_000, 0.0, 4.0, id="huge-attempt-capped"),
    ],
)
def test_backoff_delay(attempt, draw, expected):
    assert backoff_delay(attempt, initial=1.0, maximum=8.0, random=lambda: draw) == expected


def test_redact_replaces_secrets_and_ignores_short_ones():
    text = f"invalid token {SECRET} for user ab"
    assert redact(text, [SECRET, "ab", ""]) == "invalid token [redacted] for user ab"


def test_time_chunks_split_range():
    assert time_chunks(0, 25, 10) == [(0, 10), (10, 20), (20, 25)]
    assert time_chunks(5, 5, 10) == []


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param({"base_url": "ftp://host"}, "must be an http:// or https:// URL", id="scheme"),
        pytest.param({"base_url": "http://"}, "must be an http:// or https:// URL", id="no-host"),
        pytest.param({"base_url": "http://h/?a=1"}, "must not contain a query", id="query"),
        pytest.param({"timeout_seconds": 0}, "timeout_seconds must be a positive", id="timeout"),
        pytest.param({"max_attempts": 0}, "max_attempts must be an integer >= 1", id="attempts"),
        pytest.param(
            {"max_attempts": True}, "max_attempts must be an integer >= 1", id="attempts-bool"
        ),
        pytest.param({"cache_ttl_seconds": -1}, "cache_ttl_seconds must be", id="ttl"),
        pytest.param(
            {"retry_after_max_seconds": float("nan")}, "retry_after_max_seconds", id="nan"
        ),
    ],
)
def test_http_settings_reject_bad_values(settings, message):
    values = {"base_url": "https://api.example.com", **settings}
    with pytest.raises(ValueError, match=message):
        HttpSettings(**values)


# Credentials.


def test_secret_from_environment(monkeypatch):
    monkeypatch.setenv("TEST_KEY", f"  {SECRET}\n")
    ref = SecretRef(setting="api_key", env="TEST_KEY")
    assert ref.read(provider="p", label="p (region r)") == SECRET


def test_secret_from_file_strips_newline(tmp_path):
    file = tmp_path / "key"
    file.write_text(SECRET + "\n", encoding="utf-8")
    ref = SecretRef(setting="api_key", file=str(file))
    assert ref.read(provider="p", label="p") == SECRET


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        pytest.param(
            "unset", "environment variable TEST_KEY (api_key_env) is not set", id="env-unset"
        ),
        pytest.param(
            "empty-env", "environment variable TEST_KEY (api_key_env) is empty", id="env-empty"
        ),
        pytest.param("missing-file", "cannot read file", id="file-missing"),
        pytest.param("empty-file", "(api_key_file) is empty", id="file-empty"),
    ],
)
def test_secret_problems_raise_auth_error(setup, message, monkeypatch, tmp_path):
    monkeypatch.delenv("TEST_KEY", raising=False)
    file = tmp_path / "key"
    if setup == "empty-env":
        monkeypatch.setenv("TEST_KEY", "   ")
    if setup == "empty-file":
        file.write_text("\n", encoding="utf-8")
    if setup in ("unset", "empty-env"):
        ref = SecretRef(setting="api_key", env="TEST_KEY")
    else:
        ref = SecretRef(setting="api_key", file=str(file))
    with pytest.raises(
        SourceAuthError, match=message.replace("(", r"\(").replace(")", r"\)")
    ) as caught:
        ref.read(provider="p", label="p (region eu-west)")
    assert caught.value.provider == "p"


def test_secret_needs_exactly_one_place():
    with pytest.raises(ValueError, match="exactly one of api_key_env and api_key_file"):
        SecretRef(setting="api_key")
    with pytest.raises(ValueError, match="exactly one"):
        SecretRef(setting="api_key", env="A", file="/b")


# Requests against the mock server.


@pytest.mark.asyncio
async def test_response_cached_within_ttl(mock_server, http_client):
    mock_server.route("/data", reply_json({"value": 1}))
    clock = FakeClock(NOW)
    http = make_http(mock_server, http_client, clock=clock, cache_ttl_seconds=300)

    assert await http.get_json("/data", params={"zone": "DE"}) == {"value": 1}
    clock.advance(299)
    assert await http.get_json("/data", params={"zone": "DE"}) == {"value": 1}
    assert len(mock_server.calls("/data")) == 1

    await http.get_json("/data", params={"zone": "FR"})
    assert len(mock_server.calls("/data")) == 2

    clock.advance(2)
    await http.get_json("/data", params={"zone": "DE"})
    assert len(mock_server.calls("/data")) == 3


@pytest.mark.asyncio
async def test_concurrent_calls_share_one_request(mock_server, http_client):
    mock_server.route("/data", reply_after(0.05, reply_json({"value": 2})))
    http = make_http(mock_server, http_client)
    results = await asyncio.gather(*(http.get_json("/data") for _ in range(5)))
    assert results == [{"value": 2}] * 5
    assert len(mock_server.calls("/data")) == 1


@pytest.mark.asyncio
async def test_cache_disabled_with_zero_ttl(mock_server, http_client):
    mock_server.route("/data", reply_json([]))
    http = make_http(mock_server, http_client, cache_ttl_seconds=0)
    await http.get_json("/data")
    await http.get_json("/data")
    assert len(mock_server.calls("/data")) == 2


@pytest.mark.asyncio
async def test_server_error_then_success_retries_with_backoff(mock_server, http_client):
    mock_server.route("/data", reply_text("busy", status=500), reply_json({"ok": True}))
    sleep = RecordingSleep()
    http = make_http(mock_server, http_client, sleep=sleep)
    with capture_logs() as logs:
        assert await http.get_json("/data") == {"ok": True}
    assert len(mock_server.calls("/data")) == 2
    # random() is 0.5, so the first backoff is 0.75 of its 1 s ceiling.
    assert sleep.delays == [0.75]
    (retry,) = [entry for entry in logs if entry["event"] == "carbon_request_retry"]
    assert retry["attempt"] == "1 of 3"
    assert retry["log_level"] == "warning"
    assert retry["provider"] == "testprovider"
    assert retry["region"] == "eu-west"
    assert retry["zone"] == "DE"
    assert retry["path"] == "/data"
    assert retry["reason"] == "HTTP 500 Internal Server Error"


@pytest.mark.asyncio
async def test_outage_gives_up_after_max_attempts(mock_server, http_client):
    mock_server.route("/data", reply_text("down", status=503))
    sleep = RecordingSleep()
    http = make_http(mock_server, http_client, sleep=sleep)
    with capture_logs() as logs, pytest.raises(SourceUnavailable) as caught:
        await http.get_json("/data")
    assert len(mock_server.calls("/data")) == 3
    assert sleep.delays == [0.75, 1.5]
    error = caught.value
    assert error.status == 503
    assert error.path == "/data"
    assert error.provider == "testprovider"
    assert str(error) == (
        "testprovider (region eu-west, zone DE): GET /data failed: HTTP 503 Service Unavailable; "
        "gave up after 3 attempts"
    )
    attempts = [entry["attempt"] for entry in logs if entry["event"] == "carbon_request_retry"]
    assert attempts == ["1 of 3", "2 of 3"]
    (final,) = [entry for entry in logs if entry["event"] == "carbon_source_unavailable"]
    assert final["log_level"] == "error"
    assert final["attempts"] == 3


@pytest.mark.asyncio
async def test_429_obeys_retry_after_seconds(mock_server, http_client):
    mock_server.route(
        "/data",
        reply_text("slow down", status=429, headers={"Retry-After": "7"}),
        reply_json({"ok": 1}),
    )
    sleep = RecordingSleep()
    http = make_http(mock_server, http_client, sleep=sleep)
    assert await http.get_json("/data") == {"ok": 1}
    assert sleep.delays == [7.0]
    assert len(mock_server.calls("/data")) == 2


@pytest.mark.asyncio
async def test_429_obeys_retry_after_http_date(mock_server, http_client):
    date = format_datetime(datetime.fromtimestamp(NOW + 42, UTC), usegmt=True)
    mock_server.route(
        "/data",
        reply_text("slow down", status=429, headers={"Retry-After": date}),
        reply_json({"ok": 1}),
    )
    sleep = RecordingSleep()
    http = make_http(mock_server, http_client, clock=FakeClock(NOW), sleep=sleep)
    assert await http.get_json("/data") == {"ok": 1}
    assert sleep.delays == [42.0]


@pytest.mark.asyncio
async def test_429_without_retry_after_uses_backoff(mock_server, http_client):
    mock_server.route("/data", reply_text("slow down", status=429), reply_json({"ok": 1}))
    sleep = RecordingSleep()
    http = make_http(mock_server, http_client, sleep=sleep)
    assert await http.get_json("/data") == {"ok": 1}
    assert sleep.delays == [0.75]


@pytest.mark.asyncio
async def test_long_retry_after_blocks_calls(mock_server, http_client):
    mock_server.route(
        "/data",
        reply_text("quota", status=429, headers={"Retry-After": "600"}),
        reply_json({"ok": 1}),
    )
    clock = FakeClock(NOW)
    sleep = RecordingSleep()
    http = make_http(
        mock_server, http_client, clock=clock, sleep=sleep, retry_after_max_seconds=120
    )

    with capture_logs() as logs, pytest.raises(SourceUnavailable) as caught:
        await http.get_json("/data")
    assert caught.value.retry_after_seconds == 600
    assert caught.value.status == 429
    assert "longer than the 120 s this client waits" in str(caught.value)
    assert sleep.delays == []
    assert len(mock_server.calls("/data")) == 1
    assert [entry["event"] for entry in logs] == ["carbon_source_rate_limited"]

    clock.advance(100)
    with pytest.raises(SourceUnavailable, match="Retry-After of an earlier HTTP 429 or 503 has 500 s left") as blocked:
        await http.get_json("/data")
    assert blocked.value.retry_after_seconds == 500
    assert len(mock_server.calls("/data")) == 1

    clock.advance(500)
    assert await http.get_json("/data") == {"ok": 1}
    assert len(mock_server.calls("/data")) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [401, 403])
async def test_auth_rejection_is_permanent(mock_server, http_client, status):
    mock_server.route("/data", reply_text(f"bad key {SECRET}", status=status))
    http = make_http(mock_server, http_client)
    with pytest.raises(SourceAuthError) as caught:
        await http.get_json("/data", headers={"auth-token": SECRET})
    assert len(mock_server.calls("/data")) == 1
    assert caught.value.status == status
    message = str(caught.value)
    assert message.startswith(
        f"testprovider (region eu-west, zone DE): GET /data was rejected with HTTP {status}"
    )
    assert message.endswith("check the API key in environment variable TEST_KEY (api_key_env)")
    assert SECRET not in message


@pytest.mark.asyncio
async def test_other_client_error_quotes_redacted_body(mock_server, http_client):
    mock_server.route("/data", reply_text(f"unknown zone XX for token {SECRET}", status=404))
    http = make_http(mock_server, http_client)
    with pytest.raises(SourceRequestError) as caught:
        await http.get_json("/data", params={"zone": "XX"})
    assert len(mock_server.calls("/data")) == 1
    assert str(caught.value) == (
        "testprovider (region eu-west, zone DE): GET /data was rejected with HTTP 404 Not Found: "
        "unknown zone XX for token [redacted]"
    )


@pytest.mark.asyncio
async def test_malformed_json_is_data_error_without_retry(mock_server, http_client):
    mock_server.route("/data", reply_text("{not json", status=200))
    http = make_http(mock_server, http_client)
    with pytest.raises(
        SourceDataError, match=r"GET /data returned a body that is not valid JSON: \{not json"
    ):
        await http.get_json("/data")
    assert len(mock_server.calls("/data")) == 1


@pytest.mark.asyncio
async def test_timeout_is_retried_then_unavailable(mock_server, http_client):
    mock_server.route("/slow", reply_after(2.0, reply_json({"late": True})))
    sleep = RecordingSleep()
    http = make_http(mock_server, http_client, sleep=sleep, timeout_seconds=0.05, max_attempts=2)
    with pytest.raises(
        SourceUnavailable, match=r"GET /slow failed: timed out after 0.05 s \(ReadTimeout\)"
    ):
        await http.get_json("/slow")
    assert len(mock_server.calls("/slow")) == 2
    assert len(sleep.delays) == 1


@pytest.mark.asyncio
async def test_connection_refused_is_unavailable(http_client):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = MockServer(url=f"http://127.0.0.1:{port}")
    http = make_http(server, http_client, max_attempts=2)
    with pytest.raises(
        SourceUnavailable, match=r"connection failed \(ConnectError\); gave up after 2 attempts"
    ) as caught:
        await http.get_json("/data")
    assert caught.value.status is None
    assert caught.value.__cause__ is not None


@pytest.mark.asyncio
async def test_own_client_is_closed(mock_server, monkeypatch):
    # The client of its own honours proxy variables; keep them off loopback.
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    mock_server.route("/data", reply_json({"a": 1}))
    http = ProviderHttp(
        provider="testprovider",
        settings=HttpSettings(base_url=mock_server.url),
        clock=FakeClock(NOW),
        context={},
    )
    assert await http.get_json("/data") == {"a": 1}
    assert mock_server.calls("/data")[0].headers["user-agent"].startswith("carbon-scheduler/")
    await http.aclose()
    await http.aclose()
    with pytest.raises(SourceError, match="testprovider: the source is closed"):
        await http.get_json("/data", use_cache=False)


@pytest.mark.asyncio
async def test_expired_entries_are_evicted(mock_server, http_client):
    mock_server.route("/forecast/a", reply_json({"n": 1}))
    mock_server.route("/forecast/b", reply_json({"n": 2}))
    clock = FakeClock(NOW)
    http = make_http(mock_server, http_client, clock=clock, cache_ttl_seconds=60)
    await http.get_json("/forecast/a")
    clock.advance(61)
    await http.get_json("/forecast/b")
    assert [key[0] for key in http._cache] == ["/forecast/b"]
    assert [key[0] for key in http._locks] == ["/forecast/b"]
