"""InfluxStore against a scripted HTTP server: retries, errors, requests sent.

The server runs on 127.0.0.1 in a thread, replies to each request with the next
scripted reply and records every request, so the tests check exactly what the
client sent and how often. The store gets a fake `sleep` that records the
delays, so backoff and Retry-After are checked without waiting.
"""

from __future__ import annotations

import base64
import email.utils
import http.server
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import pytest
from structlog.testing import capture_logs

from carbon_scheduler.store import (
    EmissionRecord,
    InfluxStore,
    Sample,
    StoreAuthError,
    StoreConnectionError,
    StoreQueryError,
    StoreRequestError,
    StoreResponseError,
    StoreUnavailableError,
)
from carbon_scheduler.store.line_protocol import task_offset_nanoseconds
from tests.influxd import free_port

T0 = 1_700_000_000
EMPTY_RESULT = b'{"results":[{"statement_id":0}]}'


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def param(self, name: str) -> str:
        (value,) = self.params[name]
        return value


class ScriptedServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.replies: list[Reply] = []
        self.requests: list[Request] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def handle_error(self, request: object, client_address: object) -> None:
        # The timeout test drops connections on purpose; the handler's broken
        # pipe there is expected and must not print a traceback.
        pass


class ScriptedHandler(http.server.BaseHTTPRequestHandler):
    server: ScriptedServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        target = urlsplit(self.path)
        with self.server.lock:
            self.server.requests.append(
                Request(self.command, target.path, parse_qs(target.query), dict(self.headers), body)
            )
            reply = self.server.replies.pop(0) if self.server.replies else Reply(599, b"no scripted reply left")
        time.sleep(reply.delay_seconds)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    # A short poll interval lets shutdown() return quickly at teardown.
    thread = threading.Thread(target=scripted.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield scripted
    scripted.shutdown()
    scripted.server_close()
    thread.join(timeout=10)


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_store(server: ScriptedServer, sleeps: list[float], **options: object) -> InfluxStore:
    return InfluxStore(server.url, sleep=sleeps.append, **options)  # type: ignore[arg-type]


SAMPLES = [Sample("eu-west", T0, 250.5, "trace"), Sample("eu-west", T0 + 3600, 199.0, "trace")]
SAMPLE_BODY = (
    b"carbon_intensity,region=eu-west,source=trace intensity_g_per_kwh=250.5 1700000000\n"
    b"carbon_intensity,region=eu-west,source=trace intensity_g_per_kwh=199.0 1700003600"
)


# Retries


def test_write_retries_500_then_succeeds(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Reply(500, b'{"error":"timeout"}'), Reply(204))
    store = make_store(server, sleeps)

    with capture_logs() as logs:
        store.write_samples(SAMPLES)

    assert [(request.method, request.path) for request in server.requests] == [("POST", "/write")] * 2
    assert server.requests[0].body == SAMPLE_BODY
    assert server.requests[1].body == SAMPLE_BODY
    assert server.requests[0].param("db") == "carbon"
    assert server.requests[0].param("precision") == "s"
    assert sleeps == [0.5]
    assert len(logs) == 1
    assert logs[0]["event"] == "influx_request_retry"
    assert logs[0]["log_level"] == "warning"
    assert logs[0]["attempt"] == "1 of 4"
    assert logs[0]["path"] == "/write"
    assert logs[0]["reason"] == 'HTTP 500: {"error":"timeout"}'
    assert logs[0]["retry_in_seconds"] == 0.5


def test_write_gives_up_after_retries(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(*[Reply(503, b"overloaded")] * 4)
    store = make_store(server, sleeps)

    with capture_logs() as logs, pytest.raises(StoreUnavailableError) as raised:
        store.write_samples(SAMPLES)

    assert len(server.requests) == 4
    assert sleeps == [0.5, 1.0, 2.0]
    assert [entry["attempt"] for entry in logs] == ["1 of 4", "2 of 4", "3 of 4"]
    assert raised.value.status == 503
    assert raised.value.retryable is True
    assert "HTTP 503: overloaded" in str(raised.value)
    assert "gave up after 4 attempts" in raised.value.__notes__


def test_backoff_grows_from_setting(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(*[Reply(502)] * 3)
    store = make_store(server, sleeps, retries=2, backoff_seconds=0.25)

    with pytest.raises(StoreUnavailableError):
        store.write_samples(SAMPLES)

    assert len(server.requests) == 3
    assert sleeps == [0.25, 0.5]


def test_zero_retries_sends_once(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Reply(500))
    store = make_store(server, sleeps, retries=0)

    with pytest.raises(StoreUnavailableError):
        store.write_samples(SAMPLES)

    assert len(server.requests) == 1
    assert sleeps == []


def test_429_waits_retry_after_seconds(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Reply(429, b"slow down", {"Retry-After": "7"}), Reply(204))
    store = make_store(server, sleeps)

    store.write_samples(SAMPLES)

    assert len(server.requests) == 2
    assert sleeps == [7.0]


def test_429_waits_retry_after_date(server: ScriptedServer, sleeps: list[float]) -> None:
    retry_at = email.utils.formatdate(time.time() + 30, usegmt=True)
    server.script(Reply(429, headers={"Retry-After": retry_at}), Reply(204))
    store = make_store(server, sleeps)

    store.write_samples(SAMPLES)

    assert len(server.requests) == 2
    assert len(sleeps) == 1
    # The HTTP date has whole seconds, so the delay is up to one second short of 30.
    assert 28.0 < sleeps[0] <= 30.0


def test_429_without_retry_after_backs_off(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Reply(429), Reply(204))
    store = make_store(server, sleeps)

    store.write_samples(SAMPLES)

    assert sleeps == [0.5]


def test_503_retry_after_obeyed(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Reply(503, headers={"Retry-After": "3"}), Reply(204))
    store = make_store(server, sleeps)

    store.write_samples(SAMPLES)

    assert sleeps == [3.0]


def test_long_retry_after_fails_at_once(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Reply(429, b"quota exceeded", {"Retry-After": "3600"}))
    store = make_store(server, sleeps)

    with pytest.raises(StoreUnavailableError) as raised:
        store.write_samples(SAMPLES)

    assert len(server.requests) == 1
    assert sleeps == []
    assert raised.value.status == 429
    assert any("retry after 3600 s" in note for note in raised.value.__notes__)


def test_query_retried_like_writes(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(
        Reply(500),
        Reply(200, b'{"results":[{"statement_id":0,"series":[{"name":"carbon_intensity",'
              b'"columns":["time","intensity_g_per_kwh","source"],"values":[[1700000000,250.5,"trace"]]}]}]}'),
    )
    store = make_store(server, sleeps)

    found = store.samples("eu-west", T0, T0 + 1)

    assert found == [Sample("eu-west", T0, 250.5, "trace")]
    assert [request.method for request in server.requests] == ["GET", "GET"]
    assert sleeps == [0.5]


def test_real_sleep_between_attempts(server: ScriptedServer) -> None:
    server.script(Reply(500), Reply(204))
    store = InfluxStore(server.url, backoff_seconds=0.2)

    started = time.monotonic()
    store.write_samples(SAMPLES)
    elapsed = time.monotonic() - started

    assert len(server.requests) == 2
    assert elapsed >= 0.2


def test_connection_refused_retried(sleeps: list[float]) -> None:
    closed_port = free_port()
    store = InfluxStore(f"http://127.0.0.1:{closed_port}", retries=2, sleep=sleeps.append)

    with capture_logs() as logs, pytest.raises(StoreConnectionError) as raised:
        store.write_samples(SAMPLES)

    assert sleeps == [0.5, 1.0]
    assert [entry["attempt"] for entry in logs] == ["1 of 3", "2 of 3"]
    assert isinstance(raised.value.__cause__, ConnectionRefusedError)
    assert raised.value.retryable is True
    assert f"127.0.0.1:{closed_port}" in str(raised.value)


def test_timeout_retried(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Reply(204, delay_seconds=1.0), Reply(204))
    store = make_store(server, sleeps, timeout_seconds=0.2)

    with capture_logs() as logs:
        store.write_samples(SAMPLES)

    assert len(server.requests) == 2
    assert sleeps == [0.5]
    assert logs[0]["reason"].startswith("TimeoutError")


# Permanent errors

PERMANENT_REPLIES = {
    "bad request": (Reply(400, b'{"error":"unable to parse"}'), StoreRequestError, "HTTP 400"),
    "unauthorized": (Reply(401, b'{"error":"authorization failed"}'), StoreAuthError, "HTTP 401"),
    "forbidden": (Reply(403, b'{"error":"not admin"}'), StoreAuthError, "HTTP 403"),
    "not found": (Reply(404, b"404 page not found"), StoreRequestError, "HTTP 404"),
    "payload too large": (Reply(413, b"too large"), StoreRequestError, "HTTP 413"),
    "redirect": (Reply(301, headers={"Location": "/v2"}), StoreRequestError, "redirected"),
}


@pytest.mark.parametrize(("reply", "error", "message"), PERMANENT_REPLIES.values(), ids=PERMANENT_REPLIES.keys())
def test_permanent_status_not_retried(
    server: ScriptedServer, sleeps: list[float], reply: Reply, error: type[Exception], message: str
) -> None:
    server.script(reply)
    store = make_store(server, sleeps)

    with capture_logs() as logs, pytest.raises(error, match=message) as raised:
        store.write_samples(SAMPLES)

    assert len(server.requests) == 1
    assert sleeps == []
    assert logs == []
    assert raised.value.status == reply.status  # type: ignore[attr-defined]
    assert raised.value.retryable is False  # type: ignore[attr-defined]


def test_401_with_password_names_fix_not_secret(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Reply(401, b'{"error":"authorization failed"}'))
    store = make_store(server, sleeps, username="reader", password="s3cret-Pa55")

    with pytest.raises(StoreAuthError) as raised:
        store.samples("eu-west", T0, T0 + 1)

    message = str(raised.value)
    assert "HTTP 401" in message
    assert "authorization failed" in message
    assert "check the username and password" in message
    assert "s3cret-Pa55" not in message
    assert "s3cret-Pa55" not in repr(store)


def test_password_sent_as_basic_auth(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Reply(204), Reply(200, b'{"results":[{"statement_id":0}]}'))
    store = make_store(server, sleeps, username="reader", password="s3cret-Pa55:é")

    store.write_samples(SAMPLES)
    store.samples("eu-west", T0, T0 + 1)

    assert len(server.requests) == 2
    for request in server.requests:
        scheme, _, encoded = request.headers["Authorization"].partition(" ")
        assert scheme == "Basic"
        assert base64.b64decode(encoded).decode("utf-8") == "reader:s3cret-Pa55:é"
        assert "u" not in request.params
        assert "p" not in request.params
        assert "s3cret" not in request.path


def test_username_with_colon_rejected() -> None:
    with pytest.raises(ValueError, match="must not contain ':'"):
        InfluxStore("http://127.0.0.1:8086", username="team:reader", password="pw")


def test_token_sent_as_header_and_redacted(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Reply(403, b'{"error":"token tok-ABC123 lacks write permission"}'))
    store = make_store(server, sleeps, token="tok-ABC123")

    with pytest.raises(StoreAuthError) as raised:
        store.write_samples(SAMPLES)

    assert server.requests[0].headers["Authorization"] == "Token tok-ABC123"
    assert "u" not in server.requests[0].params
    assert "p" not in server.requests[0].params
    assert raised.value.body == '{"error":"token [redacted] lacks write permission"}'
    assert "tok-ABC123" not in str(raised.value)
    assert "check the token" in str(raised.value)


def test_retry_log_has_no_secret(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Reply(500, b"upstream said p=s3cret-Pa55"), Reply(204))
    store = make_store(server, sleeps, username="writer", password="s3cret-Pa55")

    with capture_logs() as logs:
        store.write_samples(SAMPLES)

    assert len(logs) == 1
    assert "s3cret-Pa55" not in repr(logs)
    assert logs[0]["reason"] == "HTTP 500: upstream said p=[redacted]"
    assert logs[0]["path"] == "/write"


def test_long_error_body_trimmed(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Reply(400, b'{"error":"' + b"x" * 5000 + b'"}'))
    store = make_store(server, sleeps)

    with pytest.raises(StoreRequestError) as raised:
        store.write_samples(SAMPLES)

    assert len(raised.value.body) < 400
    assert raised.value.body.endswith("... (5012 characters)")
    assert len(str(raised.value)) < 500


# Query responses


def test_malformed_json_query_not_retried(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Reply(200, b'{"results": [{"statement_id": 0, "series": [}'))
    store = make_store(server, sleeps)

    with pytest.raises(StoreResponseError, match="invalid JSON"):
        store.samples("eu-west", T0, T0 + 3600)

    assert len(server.requests) == 1
    request = server.requests[0]
    assert (request.method, request.path) == ("GET", "/query")
    assert request.param("db") == "carbon"
    assert request.param("epoch") == "s"
    assert request.param("chunked") == "true"
    assert request.param("q") == (
        'SELECT "intensity_g_per_kwh", "source" FROM "carbon_intensity" '
        "WHERE \"region\" = 'eu-west' AND time >= 1700000000000000000 AND time < 1700003600000000000"
    )


def test_unexpected_query_shape_rejected(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Reply(200, b'{"results": "nope"}'))
    store = make_store(server, sleeps)

    with pytest.raises(StoreResponseError, match="unexpected shape"):
        store.latest_sample("eu-west")

    assert len(server.requests) == 1


def test_query_statement_error_raised(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Reply(200, b'{"results":[{"statement_id":0,"error":"shard is disabled"}]}'))
    store = make_store(server, sleeps)

    with pytest.raises(StoreQueryError, match="shard is disabled"):
        store.forecasts("eu-west", T0)

    assert len(server.requests) == 1


def test_query_of_missing_database_is_empty(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Reply(200, b'{"results":[{"statement_id":0,"error":"database not found: carbon"}]}'))
    store = make_store(server, sleeps)

    assert store.emissions(T0, T0 + 3600) == []
    assert len(server.requests) == 1


def test_chunked_query_documents_merged(server: ScriptedServer, sleeps: list[float]) -> None:
    columns = b'"columns":["time","intensity_g_per_kwh","source"]'
    server.script(
        Reply(
            200,
            b'{"results":[{"statement_id":0,"series":[{"name":"carbon_intensity",' + columns
            + b',"values":[[1700003600,2.0,"trace"]],"partial":true}],"partial":true}]}\n'
            b'{"results":[{"statement_id":0,"series":[{"name":"carbon_intensity",' + columns
            + b',"values":[[1700000000,1.0,"trace"]]}]}]}\n',
        )
    )
    store = make_store(server, sleeps)

    found = store.samples("eu-west", T0, T0 + 7200)

    assert found == [Sample("eu-west", T0, 1.0, "trace"), Sample("eu-west", T0 + 3600, 2.0, "trace")]


def test_latest_sample_reads_grouped_series(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(
        Reply(
            200,
            b'{"results":[{"statement_id":0,"series":['
            b'{"name":"carbon_intensity","tags":{"source":"b"},"columns":["time","intensity_g_per_kwh"],'
            b'"values":[[1700003600,2.0]]},'
            b'{"name":"carbon_intensity","tags":{"source":"a"},"columns":["time","intensity_g_per_kwh"],'
            b'"values":[[1700000000,1.0]]}]}]}',
        )
    )
    store = make_store(server, sleeps)

    assert store.latest_sample("eu-west") == Sample("eu-west", T0 + 3600, 2.0, "b")
    assert server.requests[0].param("q") == (
        'SELECT "intensity_g_per_kwh" FROM "carbon_intensity" WHERE "region" = \'eu-west\' '
        'GROUP BY "source" ORDER BY time DESC LIMIT 1'
    )


# Database creation and batches


def test_write_creates_missing_database(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Reply(404, b'{"error":"database not found: \\"history\\""}'), Reply(200, EMPTY_RESULT), Reply(204))
    store = make_store(server, sleeps, database="history")

    with capture_logs() as logs:
        store.write_samples(SAMPLES)

    assert [(request.method, request.path) for request in server.requests] == [
        ("POST", "/write"),
        ("POST", "/query"),
        ("POST", "/write"),
    ]
    assert server.requests[1].body == b"q=CREATE+DATABASE+%22history%22"
    assert server.requests[2].body == SAMPLE_BODY
    assert sleeps == []
    assert [entry["event"] for entry in logs] == ["influx_database_created"]


def test_database_creation_refused(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(
        Reply(404, b'{"error":"database not found: \\"carbon\\""}'),
        Reply(403, b'{"error":"error authorizing query: reader not authorized to execute statement"}'),
    )
    store = make_store(server, sleeps, username="reader", password="pw")

    with pytest.raises(StoreAuthError, match="not authorized"):
        store.write_samples(SAMPLES)

    assert len(server.requests) == 2


def test_missing_bucket_names_fix(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Reply(404, b'{"code":"not found","message":"bucket \\"carbon/autogen\\" not found"}'))
    store = make_store(server, sleeps, token="t0ken")

    with pytest.raises(StoreRequestError, match="HTTP 404") as raised:
        store.write_samples(SAMPLES)

    assert len(server.requests) == 1
    assert any("create the bucket and a DBRP mapping" in note for note in raised.value.__notes__)


def test_write_split_into_batches(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Reply(204), Reply(204), Reply(204))
    store = make_store(server, sleeps, batch_size=2)
    samples = [Sample("eu-west", T0 + hour * 3600, float(hour), "trace") for hour in range(5)]

    store.write_samples(samples)

    assert [request.body.count(b"\n") + 1 for request in server.requests] == [2, 2, 1]
    assert server.requests[2].body == b"carbon_intensity,region=eu-west,source=trace intensity_g_per_kwh=4.0 1700014400"


def test_failed_batch_notes_progress(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Reply(204), Reply(400, b'{"error":"field type conflict"}'))
    store = make_store(server, sleeps, batch_size=2)
    samples = [Sample("eu-west", T0 + hour * 3600, float(hour), "trace") for hour in range(5)]

    with pytest.raises(StoreRequestError, match="field type conflict") as raised:
        store.write_samples(samples)

    assert len(server.requests) == 2
    assert any("the first 2 of 5 points were written" in note for note in raised.value.__notes__)


# Line protocol on the wire


def test_labels_escaped_on_the_wire(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Reply(204))
    store = make_store(server, sleeps)

    store.write_samples([Sample("eu west, zone=1", T0, 250.5, 'src "x"')])

    assert server.requests[0].body == (
        b'carbon_intensity,region=eu\\ west\\,\\ zone\\=1,source=src\\ "x" intensity_g_per_kwh=250.5 1700000000'
    )


def test_emissions_written_in_nanoseconds(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script(Reply(204))
    store = make_store(server, sleeps)
    record = EmissionRecord(
        task_id='ns/pod "a",b=c \\x',
        region="eu-west",
        task_class="critical",
        decision_time=T0 - 60,
        start=T0 - 30,
        end=T0,
        energy_kwh=0.5,
        emissions_g=12.0,
        counterfactual_region="us-east",
        counterfactual_emissions_g=20.0,
    )

    store.write_emissions([record])

    timestamp = T0 * 1_000_000_000 + task_offset_nanoseconds(record.task_id)
    assert server.requests[0].param("precision") == "ns"
    assert server.requests[0].body.decode() == (
        "task_emissions,class=critical,counterfactual_region=us-east,region=eu-west "
        "counterfactual_emissions_g=20.0,decision_time=1699999940i,emissions_g=12.0,end=1700000000i,"
        'energy_kwh=0.5,start=1699999970i,task_id="ns/pod \\"a\\",b=c \\\\x" '
        f"{timestamp}"
    )
    assert 0 <= task_offset_nanoseconds(record.task_id) < 1_000_000_000


# Options

INVALID_OPTIONS = {
    "token and password": ({"token": "t", "username": "u", "password": "p"}, "either token or username"),
    "username alone": ({"username": "u"}, "given together"),
    "zero batch size": ({"batch_size": 0}, "batch_size must be a positive integer"),
    "negative retries": ({"retries": -1}, "retries must be a non-negative integer"),
    "zero timeout": ({"timeout_seconds": 0}, "timeout_seconds must be positive"),
    "empty database": ({"database": ""}, "database '' must be a non-empty name"),
}


@pytest.mark.parametrize(("options", "message"), INVALID_OPTIONS.values(), ids=INVALID_OPTIONS.keys())
def test_invalid_options_rejected(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        InfluxStore("http://127.0.0.1:8086", **options)  # type: ignore[arg-type]


INVALID_URLS = {
    "no scheme": ("127.0.0.1:8086", "must start with http:// or https://"),
    "no host": ("http://", "has no host"),
    "credentials": ("http://u:p@127.0.0.1:8086", "must not contain credentials"),
    "query string": ("http://127.0.0.1:8086/?db=x", "must not have a query string"),
    "bad port": ("http://127.0.0.1:http", "invalid port"),
}


@pytest.mark.parametrize(("url", "message"), INVALID_URLS.values(), ids=INVALID_URLS.keys())
def test_invalid_url_rejected(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        InfluxStore(url)
