"""Host and Origin allow-lists (DNS-rebinding and cross-site protection) for every route of
`llmgw serve`: the OpenAI and Anthropic fronts, /ui and /mcp.

A DNS-rebinding page makes the browser send *its own* name as `Host` to our address: a Host
that is not ours is refused (421 Misdirected Request) before anything else runs: no key
check, no ledger row. A request carrying an `Origin` comes from a browser: an origin that is
not allowed is refused (403). No Origin: not a browser, allowed.

What is allowed (as the MCP SDK's TransportSecuritySettings does for localhost, with any port
or none: the name is what a rebinding attack controls, never the port):
- hosts: `127.0.0.1`, `localhost`, `[::1]` always; the bound address when it is a specific
  one; every `--allowed-host` (`name` matches any port, `name:port` only that port, `*` any
  host). Bound to 0.0.0.0 / :: with no allowed host: any Host (and a loud warning at start).
- origins: `http(s)://` a loopback name with any port; the request's own origin (same-origin:
  its Host passed the check above); every `--allowed-origin` and `--cors-origin` (a CORS
  origin is an allowed origin; `scheme://name:*` any port, `*` any origin).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from llmgw.server.errors import api_of, body

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_BINDS = ("0.0.0.0", "::", "")
ANY = "*"


def split_host(value: str) -> tuple[str, str | None]:
    """`name[:port]` (a bracketed IPv6 literal keeps its brackets) -> (lowercase name, port)."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return value, None
        name, rest = value[:end + 1], value[end + 1:]
        return name, (rest[1:] if rest.startswith(":") else None)
    if value.count(":") > 1:  # a bare IPv6 literal
        return f"[{value}]", None
    name, sep, port = value.partition(":")
    return (name, port) if sep else (value, None)


def is_loopback(bind_host: str) -> bool:
    name = bind_host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_wildcard(bind_host: str) -> bool:
    return bind_host.strip().strip("[]") in WILDCARD_BINDS


def _bound_name(bind_host: str) -> str:
    name = bind_host.strip().lower()
    if ":" in name and not name.startswith("["):
        return f"[{name}]"
    return name


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """Which Host and Origin headers a request may carry."""

    any_host: bool
    names: frozenset[str]  # allowed with any port or none
    name_ports: frozenset[tuple[str, str]]  # allowed with this port only
    any_origin: bool
    origins: frozenset[str]  # exact, `scheme://name[:port]`, lowercase
    origin_any_port: frozenset[str]  # `scheme://name` with any port

    @classmethod
    def build(cls, bind_host: str, allowed_hosts: tuple[str, ...] = (),
              allowed_origins: tuple[str, ...] = (), cors_origins: tuple[str, ...] = ()
              ) -> HostPolicy:
        names = set(LOOPBACK_NAMES)
        name_ports: set[tuple[str, str]] = set()
        if not is_wildcard(bind_host) and not is_loopback(bind_host):
            names.add(_bound_name(bind_host))
        any_host = ANY in allowed_hosts or (is_wildcard(bind_host) and not allowed_hosts)
        for entry in allowed_hosts:
            if entry == ANY:
                continue
            name, port = split_host(entry)
            if port in (None, "*"):
                names.add(name)
            else:
                name_ports.add((name, port))
        listed = tuple(allowed_origins) + tuple(cors_origins)
        exact, any_port = set(), set()
        for entry in listed:
            if entry == ANY:
                continue
            entry = entry.strip().rstrip("/").lower()
            if entry.endswith(":*"):
                any_port.add(entry[:-2])
            else:
                exact.add(entry)
        return cls(any_host, frozenset(names), frozenset(name_ports), ANY in listed,
                   frozenset(exact), frozenset(any_port))

    def host_allowed(self, host: str | None) -> bool:
        if self.any_host:
            return True
        if not host:  # HTTP/1.1 requires it; only a hand-made request lacks it
            return False
        name, port = split_host(host)
        return name in self.names or (port is not None and (name, port) in self.name_ports)

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """`host`: the request's Host header, which has passed `host_allowed`."""
        if origin is None or self.any_origin:
            return True
        origin = origin.strip().rstrip("/").lower()
        if origin in self.origins:
            return True
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # "null" (a sandboxed or file: page) and the like
        name, _port = split_host(parts.netloc)
        if name in LOOPBACK_NAMES:
            return True
        if host and parts.netloc == host.strip().lower():
            return True  # same-origin: a page we served calling us back
        return f"{parts.scheme}://{name}" in self.origin_any_port


def exposure_warning(bind_host: str, allowed_hosts: tuple[str, ...]) -> str | None:
    """What `llmgw serve` says at start when it accepts any Host header."""
    if allowed_hosts or not is_wildcard(bind_host):
        return None
    return (f"WARNING: llmgw serve is bound to {bind_host or '0.0.0.0'} with no allowed host: it "
            "accepts any Host header, so a web page can reach it by DNS rebinding. Name the "
            "host names clients use: --allowed-host gw.example.com (repeatable) or "
            "LLMGW_SERVE_ALLOWED_HOSTS=gw.example.com,...")


class HostOriginGuard:
    """ASGI middleware: refuses a request whose Host or Origin is not allowed, before any
    other middleware or route sees it (so nothing is checked or recorded for it)."""

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = origin = None
        for key, value in scope.get("headers", ()):
            if key == b"host":
                host = value.decode("latin-1")
            elif key == b"origin":
                origin = value.decode("latin-1")
        refusal: tuple[int, str, str] | None = None
        if not self.policy.host_allowed(host):
            refusal = (421, "host_not_allowed", (
                f"Host {(host or '')[:100]!r} is not an allowed host of this server (DNS "
                "rebinding protection). Call it by an allowed name; an operator adds names "
                "with `llmgw serve --allowed-host NAME` or LLMGW_SERVE_ALLOWED_HOSTS."))
        elif not self.policy.origin_allowed(origin, host):
            refusal = (403, "origin_not_allowed", (
                f"Origin {(origin or '')[:100]!r} is not allowed to call this server. An "
                "operator allows a site with `llmgw serve --allowed-origin ORIGIN` (or "
                "--cors-origin for cross-origin API calls)."))
        if refusal is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        status, code, message = refusal
        kind = "invalid_request_error" if status == 421 else "permission_error"
        response = JSONResponse(body(api_of(scope.get("path", "")), status, code, message,
                                     openai_type=kind, anthropic_type=kind), status_code=status)
        await response(scope, receive, send)
