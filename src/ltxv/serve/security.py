"""The service's security defaults, as one ASGI middleware and one auth check.

* **Bind and token.** Loopback by default; any other address needs a token (``ltxv serve`` refuses to start
  otherwise). The bearer token is compared in constant time (``secrets.compare_digest``); a missing or wrong one is a
  401 with ``WWW-Authenticate: Bearer``.
* **Host and Origin** (against cross-site requests to a server on localhost, and DNS rebinding): on a loopback bind
  the ``Host`` header must name a loopback host; a state-changing request (not GET/HEAD/OPTIONS) whose ``Origin`` is
  not the server's own, or that the browser marks ``Sec-Fetch-Site: cross-site``, is refused with 403. CORS stays off:
  the page is served from the same origin.
* **Body size.** A request body over ``max_body`` bytes is refused: by its ``Content-Length`` before anything is
  read, and by counting while it is read (a chunked upload has no length), before the multipart parser spools it.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
LOOPBACK_NAMES = ("localhost",)


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than this server's limit of {limit} bytes")
        self.limit = limit


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host.lower() in LOOPBACK_NAMES or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_ok(expected: str | None, authorization: str | None) -> bool:
    """Whether an ``Authorization`` header carries the bearer token (always True when no token is configured)."""
    if expected is None:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), expected.encode())


def error_body(status: int, message: str, type_: str, code: str, param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}}).encode()


class Guard:
    """ASGI middleware for the Host/Origin checks and the body cap (module docstring)."""

    def __init__(self, app: ASGIApp, *, loopback_only_hosts: bool, max_body: int) -> None:
        self.app, self.loopback_only_hosts, self.max_body = app, loopback_only_hosts, max_body

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]], send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        hostname = urlsplit(f"//{host}").hostname or ""
        if self.loopback_only_hosts and not is_loopback(hostname):
            return await _reply(send, 403, f"Host {host!r} is not allowed: this server answers to localhost only")
        if scope["method"] not in SAFE_METHODS:
            origin = headers.get("origin")
            if headers.get("sec-fetch-site") == "cross-site" or (
                origin is not None and urlsplit(origin).netloc.lower() != host.lower()
            ):
                return await _reply(send, 403, f"cross-site request refused (Origin {origin!r}, Host {host!r})")
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            limit = f"this server's limit of {self.max_body} bytes"
            return await _reply(
                send, 413, f"the request body ({length} bytes) is larger than {limit}", "body_too_large"
            )
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as e:
            if started:
                raise
            await _reply(send, 413, str(e), "body_too_large")


async def _reply(send: Callable, status: int, message: str, code: str = "forbidden") -> None:
    type_ = "permission_error" if status == 403 else "invalid_request_error"
    body = error_body(status, message, type_, code)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
