"""Who may ask: loopback by default; any other address needs a token on every request.

The rules are small pure functions, unit-tested. A token arrives as ``Authorization: Bearer T``
(scripts), as ``?token=T`` on any URL, or as the ``imgvec_token`` cookie (the page: set when it
is opened with ``?token=T``, HttpOnly, SameSite=Strict); in that order, so that the printed link
works even where a cookie of an earlier run (another token) is still kept. Tokens are compared
in constant time (:func:`secrets.compare_digest`).
"""

from __future__ import annotations

import ipaddress
import secrets

COOKIE = "imgvec_token"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
TOKEN_BYTES = 24
"""Random bytes in a generated token (192 bits; :func:`secrets.token_urlsafe`)."""


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server reachable from this machine only:
    ``localhost`` or an address in 127.0.0.0/8 or ::1. ``0.0.0.0``, ``::`` and other names
    are not."""
    if host.strip("[]") in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def needed_token(host: str, given: str | None) -> tuple[str | None, bool]:
    """The token the server demands and whether it was generated: a given one always counts;
    without one, loopback needs none and any other address gets a fresh one."""
    if given:
        return given, False
    if is_loopback(host):
        return None, False
    return new_token(), True


def presented(authorization: str | None, cookie: str | None, query: str | None) -> str | None:
    """The token a request carries, by the order above (header, query, cookie)."""
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return query or cookie


def allowed(expected: str | None, token: str | None) -> bool:
    if expected is None:
        return True
    return token is not None and secrets.compare_digest(token.encode(), expected.encode())


def allowed_hosts(host: str, port: int) -> list[str] | None:
    """``Host`` header values to accept when serving on loopback (DNS rebinding: a page on
    another site resolving its own name to 127.0.0.1 must not reach the server); None (any)
    when the server is exposed and the token guards it."""
    if not is_loopback(host):
        return None
    return ["localhost", "127.0.0.1", "[::1]", "::1", host]
