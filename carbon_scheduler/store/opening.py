"""`open_store`: choose and open a backend from one configuration string.

Accepted forms:

    /var/lib/carbon/history.db      a plain path: SQLite
    :memory:                        SQLite in memory
    sqlite:///history.db            SQLite, path relative to the working directory
    sqlite:////var/lib/history.db   SQLite, absolute path (four slashes)
    sqlite://                       SQLite in memory
    http://host:8086                InfluxDB (also https://)
    http://user:pass@host:8086/?db=carbon

The sqlite forms follow the SQLAlchemy URL convention, which Python
deployments already use. For InfluxDB, credentials in the URL are moved into
arguments (percent-decoded), `db` selects the database, and everything after the
host is kept as a path prefix. Messages show a location with its password
masked (see `config.redaction`).
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from carbon_scheduler.config.redaction import redact_url
from carbon_scheduler.store.base import Store
from carbon_scheduler.store.influx import InfluxStore
from carbon_scheduler.store.sqlite import SQLiteStore

_FORMS = "a file path, sqlite:///relative/path, sqlite:////absolute/path, sqlite:// or http(s)://host:port"


def open_store(
    url_or_path: str | os.PathLike[str],
    *,
    token: str | None = None,
    username: str | None = None,
    password: str | None = None,
    database: str | None = None,
) -> Store:
    """Open the store that `url_or_path` names.

    `token`, `username`, `password` and `database` apply to InfluxDB only; they
    must not repeat what the URL already gives. Raises ValueError for a string
    that names no backend, and StoreError when SQLite cannot open the file.
    """
    influx_options = {"token": token, "username": username, "password": password, "database": database}
    if isinstance(url_or_path, os.PathLike):
        _reject_influx_options(influx_options, os.fspath(url_or_path))
        return SQLiteStore(url_or_path)
    if not isinstance(url_or_path, str):
        raise TypeError(f"url_or_path must be a str or a path, got {type(url_or_path).__name__}")
    text = url_or_path.strip()
    if not text:
        raise ValueError(f"store location must not be empty; use {_FORMS}")
    scheme, separator, _ = text.partition("://")
    if not separator:
        _reject_influx_options(influx_options, text)
        return SQLiteStore(text)
    scheme = scheme.lower()
    if scheme == "sqlite":
        _reject_influx_options(influx_options, text)
        return SQLiteStore(_sqlite_path(text))
    if scheme in ("http", "https"):
        return _open_influx(text, token=token, username=username, password=password, database=database)
    raise ValueError(f"store location {redact_url(text)!r} has the unknown scheme {scheme!r}; use {_FORMS}")


def _sqlite_path(url: str) -> str:
    rest = url[len("sqlite://") :]
    if "?" in rest or "#" in rest:
        raise ValueError(f"SQLite URL {redact_url(url)!r} must not have a query string or fragment")
    if not rest:
        return ":memory:"
    if not rest.startswith("/"):
        raise ValueError(
            f"SQLite URL {redact_url(url)!r} names a host; use sqlite:///relative/path or sqlite:////absolute/path"
        )
    path = unquote(rest[1:])
    return path or ":memory:"


def _open_influx(
    url: str,
    *,
    token: str | None,
    username: str | None,
    password: str | None,
    database: str | None,
) -> InfluxStore:
    parts = urlsplit(url)
    if parts.fragment:
        raise ValueError("InfluxDB URL must not have a fragment")
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    unknown = sorted(set(query) - {"db"})
    if unknown:
        raise ValueError(f"InfluxDB URL has unknown parameters {unknown}; only db is accepted")
    if "db" in query:
        if database is not None:
            raise ValueError("the database is given both in the URL (db=...) and as an argument; keep one")
        if len(query["db"]) != 1 or not query["db"][0]:
            raise ValueError("the db parameter of the InfluxDB URL must appear once, with a name")
        database = query["db"][0]
    if parts.username is not None:
        if username is not None or password is not None:
            raise ValueError("credentials are given both in the URL and as arguments; keep one")
        username = unquote(parts.username)
        password = unquote(parts.password or "")
    host = parts.netloc.rpartition("@")[2]
    base_url = urlunsplit((parts.scheme.lower(), host, parts.path, "", ""))
    options: dict[str, str] = {}
    if database is not None:
        options["database"] = database
    return InfluxStore(base_url, token=token, username=username, password=password, **options)


def _reject_influx_options(options: dict[str, str | None], location: str) -> None:
    given = sorted(name for name, value in options.items() if value is not None)
    if given:
        raise ValueError(f"{', '.join(given)} apply to InfluxDB URLs only, not to SQLite location {redact_url(location)!r}")
