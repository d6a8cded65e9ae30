"""Masking of passwords and secret query values in URLs shown in messages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carbon_scheduler.config.redaction import MASK, has_credentials, redact_url

CASES = {
    "user and password": ("http://admin:hunter2@127.0.0.1:18086", "http://admin:***@127.0.0.1:18086"),
    "query p": ("http://127.0.0.1:18086/?u=admin&p=hunter2", "http://127.0.0.1:18086/?u=admin&p=***"),
    "query password and token": ("https://h/x?password=a;token=b&db=c", "https://h/x?password=***;token=***&db=c"),
    "upper-case name": ("http://h/?P=hunter2#top", "http://h/?P=***#top"),
    "user only": ("http://admin@h:1/", "http://admin@h:1/"),
    "at sign in password": ("http://u:p@ss@h/", "http://u:***@h/"),
    "p inside a longer name": ("http://h/?ip=1&pp=2", "http://h/?ip=1&pp=2"),
    "no scheme": ("127.0.0.1:18086", "127.0.0.1:18086"),
    "file path": ("/var/lib/carbon/history.db", "/var/lib/carbon/history.db"),
}


@pytest.mark.parametrize("name", CASES)
def test_redact_url_cases(name: str) -> None:
    text, expected = CASES[name]
    assert redact_url(text) == expected


def test_has_credentials() -> None:
    assert has_credentials("http://a:b@h/")
    assert has_credentials("http://a@h/")
    assert not has_credentials("http://h/?u=a&p=b")


secret_text = st.text(st.characters(whitelist_categories=("Lu", "Ll", "Nd")), min_size=4, max_size=20)


@given(
    user=st.text(st.characters(whitelist_categories=("Ll",)), min_size=1, max_size=8),
    password=secret_text,
    host=st.sampled_from(["influxdb", "127.0.0.1", "[::1]"]),
    port=st.integers(min_value=1, max_value=65535),
    path=st.sampled_from(["", "/", "/influx"]),
)
def test_redacted_url_hides_password(user: str, password: str, host: str, port: int, path: str) -> None:
    url = f"http://{user}:{password}@{host}:{port}{path}?db=x&p={password}"

    masked = redact_url(url)

    assert masked == f"http://{user}:{MASK}@{host}:{port}{path}?db=x&p={MASK}"


@given(st.text(max_size=60))
def test_redact_url_never_raises(text: str) -> None:
    masked = redact_url(text)
    assert isinstance(masked, str)
    if "://" not in text:
        assert masked == text
