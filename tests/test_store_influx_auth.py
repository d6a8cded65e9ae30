"""InfluxStore against a real influxd with authentication on: the username and
password go in an HTTP Basic header, never in the URL."""

from __future__ import annotations

import base64
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from carbon_scheduler.store import InfluxStore, Sample, StoreAuthError
from carbon_scheduler.store.influx_http import basic_authorization
from tests.influxd import InfluxServer, find_influxd

T0 = 1_700_000_000
ADMIN = "admin"
PASSWORD = "s3cret-Pa55"


@pytest.fixture(scope="module")
def secured_influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    server = InfluxServer(find_influxd(), tmp_path_factory.mktemp("influxd-auth"), auth_enabled=True)
    server.start()
    try:
        statement = f"CREATE USER {ADMIN} WITH PASSWORD '{PASSWORD}' WITH ALL PRIVILEGES"
        body = urllib.parse.urlencode({"q": statement}).encode()
        with urllib.request.urlopen(f"{server.url}/query", data=body, timeout=10) as response:
            assert response.status == 200
        yield server
    finally:
        server.stop()


def access_log(server: InfluxServer) -> str:
    return (Path(server.root) / "access.log").read_text(errors="replace")


def test_basic_auth_writes_and_reads(secured_influxd: InfluxServer) -> None:
    store = InfluxStore(secured_influxd.url, database="authed", username=ADMIN, password=PASSWORD, retries=0)
    sample = Sample("eu-west", T0, 250.5, "trace")

    store.write_samples([sample])

    assert store.samples("eu-west", T0, T0 + 1) == [sample]
    log = access_log(secured_influxd)
    assert "POST /write?db=authed" in log
    # The access log names the user of each authenticated request before its timestamp.
    assert f" {ADMIN} [" in log
    assert "p=" not in log
    assert PASSWORD not in log


def test_wrong_password_rejected(secured_influxd: InfluxServer) -> None:
    store = InfluxStore(secured_influxd.url, database="authed", username=ADMIN, password="wrong", retries=0)

    with pytest.raises(StoreAuthError) as raised:
        store.samples("eu-west", T0, T0 + 1)

    assert raised.value.status == 401
    assert "check the username and password" in str(raised.value)


def test_missing_credentials_rejected(secured_influxd: InfluxServer) -> None:
    store = InfluxStore(secured_influxd.url, database="authed", retries=0)

    with pytest.raises(StoreAuthError) as raised:
        store.write_samples([Sample("eu-west", T0, 1.0, "trace")])

    assert raised.value.status == 401
    assert "the server requires credentials" in str(raised.value)


def test_basic_header_matches_rfc_7617() -> None:
    header = basic_authorization("Aladdin", "open sesame")

    assert header == "Basic " + base64.b64encode(b"Aladdin:open sesame").decode("ascii")
    assert header == "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
