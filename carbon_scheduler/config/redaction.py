"""Masking of secrets in URLs before they reach a message or a log.

A user may paste a URL such as `http://admin:hunter2@influx:8086` or
`http://influx:8086/?u=admin&p=hunter2` into a config or a flag. Errors that
reject such a URL still show it, so the user can find it, but with the password
and the values of secret query parameters replaced by `***`. Text that is not a
URL comes back unchanged.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

MASK = "***"
# Query parameters whose values are credentials: InfluxDB 1.x reads `p`, and
# other HTTP APIs commonly read the longer names.
SECRET_PARAMETERS = frozenset({"p", "password", "token", "api_key", "apikey", "access_token", "secret"})

_SECRET_PARAMETER = re.compile(
    r"(?P<name>(?:^|(?<=[?&;]))(?:" + "|".join(sorted(SECRET_PARAMETERS)) + r"))=(?P<value>[^&;#]*)",
    re.IGNORECASE,
)


def redact_url(text: str) -> str:
    """Return `text` with the URL's password and secret query values replaced by `***`."""
    scheme, separator, rest = text.partition("://")
    if not separator:
        return text
    authority_end = len(rest)
    for delimiter in "/?#":
        index = rest.find(delimiter)
        if index != -1:
            authority_end = min(authority_end, index)
    authority, tail = rest[:authority_end], rest[authority_end:]
    userinfo, at, host = authority.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        authority = f"{user}:{MASK}@{host}" if colon else f"{userinfo}@{host}"
    query_start = tail.find("?")
    if query_start != -1:
        fragment_start = tail.find("#", query_start)
        end = len(tail) if fragment_start == -1 else fragment_start
        query = _SECRET_PARAMETER.sub(lambda match: f"{match.group('name')}={MASK}", tail[query_start + 1 : end])
        tail = f"{tail[: query_start + 1]}{query}{tail[end:]}"
    return f"{scheme}{separator}{authority}{tail}"


def has_credentials(url: str) -> bool:
    """Return True when `url` carries a user name or password before its host."""
    parts = urlsplit(url)
    return parts.username is not None or parts.password is not None
