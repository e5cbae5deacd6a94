"""What every request passes before any route sees it (so every protocol's routes share it):

- Host check: without a token only loopback Host values are served (a web page cannot drive the
  server through a DNS name rebound to 127.0.0.1); 403 otherwise.
- Origin check: a browser names the page behind every cross-site request in `Origin`. Requests without
  one (editors, curl, scripts) and from loopback pages are served, others only when [serve].allowed_origins
  matches (globs, like OLLAMA_ORIGINS); 403 otherwise, and CORS preflights are answered only for those.
  That is what keeps a web page from posting to 127.0.0.1, so a body is read as JSON whatever its
  Content-Type (as Ollama does: curl -d, scripts posting data=json.dumps(...)).
- Bearer token (401; the scheme case-insensitive), body size (413), a body that has not arrived by the
  request's deadline (408: headers and body together, slow_clients.py), JSON nested too deep (422).
- Client-facing messages show file names, not the server's local paths.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hmac
import ipaddress
import json
import re
from urllib.parse import urlsplit

from greencode.serve.slow_clients import DEADLINE_KEY

UNAUTHENTICATED_PATHS = {"/health"}
LOOPBACK_NAMES = {"localhost"}
MAX_JSON_DEPTH = 64  # request bodies are two or three levels deep; far past this is an attack or a bug
_LOCAL_PATH = re.compile(r"(?<![\w:/.~])(?:~|\.{1,2})?/(?:[^\s'\"():,;/]+/)+([^\s'\"():,;/]+)")


OPENAI_ERROR_TYPES = {"validation": "invalid_request_error", "payload_too_large": "invalid_request_error",
                      "chat_unsupported": "invalid_request_error", "forbidden_origin": "permission_error",
                      "authentication": "authentication_error", "overloaded": "rate_limit_error"}


def error_body(message: str, error_type: str, path: str = "") -> dict:
    """An error in the shape the route's protocol uses (the path tells which)."""
    if path.startswith("/v1/"):
        return {"error": {"message": message, "type": OPENAI_ERROR_TYPES.get(error_type, "server_error"),
                          "param": None, "code": error_type}}
    if path.startswith("/api/"):
        return {"error": message}
    return {"error": message, "error_type": error_type}


# What each route reads, for the one line a body that is not one gets.
EXPECTED_BODIES = {
    "/v1/completions": '{"model": "greencode", "prompt": "..."}',
    "/v1/chat/completions": '{"model": "greencode", "messages": [{"role": "user", "content": "..."}]}',
    "/api/generate": '{"model": "greencode", "prompt": "..."}',
    "/api/chat": '{"model": "greencode", "messages": [{"role": "user", "content": "..."}]}',
}
TGI_BODY = '{"inputs": "...", "parameters": {...}}'


def expected_body(path: str) -> str:
    return EXPECTED_BODIES.get(path, TGI_BODY)


def undecodable_body(cause: BaseException | None) -> str:
    """Why a body could not be decoded as JSON at all (FastAPI's 400 keeps the cause)."""
    if isinstance(cause, ValueError) and "integer string conversion" in str(cause):
        return ("the body has a number with more than 4300 digits; no field takes one that long "
                "(seed: at most 2**63 - 1)")
    return "the body is not valid JSON (it must be UTF-8 text)"


def public_message(message: str) -> str:
    """'/srv/models/agent.safetensors: not found' -> 'agent.safetensors: not found' (names, not paths)."""
    return _LOCAL_PATH.sub(r"\1", message)


def host_name(host_header: bytes) -> str:
    """'localhost:8080' -> 'localhost', '[::1]:80' -> '::1', '127.0.0.1' -> '127.0.0.1'."""
    text = host_header.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1:text.find("]")] if "]" in text else text
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def is_loopback_host(name: str) -> bool:
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def origin_allowed(origin: str, patterns: tuple[str, ...]) -> bool:
    """A loopback page (http(s)://localhost:3000, http://127.0.0.1, http://[::1]:8080) or one that matches a
    [serve].allowed_origins glob ('https://*.example.com', 'vscode-webview://*'). 'null' only by a pattern."""
    origin = origin.strip().lower()
    try:
        parts = urlsplit(origin)
        hostname = parts.hostname
    except ValueError:
        return False
    if parts.scheme in ("http", "https") and hostname and is_loopback_host(hostname):
        return True
    return any(fnmatch.fnmatchcase(origin, pattern) for pattern in patterns)


def origin_patterns(entries: list) -> tuple[str, ...]:
    """[serve].allowed_origins as lower-case globs; GreencodeError naming a bad entry."""
    from greencode.errors import GreencodeError

    for entry in entries:
        if not isinstance(entry, str) or not entry.strip() or "/" in entry.strip().split("://", 1)[-1]:
            raise GreencodeError(f"[serve].allowed_origins: {entry!r} is not an origin; give entries such as "
                                 "'https://app.example.com' or 'https://*.example.com' (scheme://host[:port], no path)")
    return tuple(entry.strip().lower() for entry in entries)


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def json_depth_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when arrays/objects nest deeper than `limit` (brackets inside strings do not count)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth, in_string, escaped = 0, False, False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


async def send_json(send, status: int, body: dict, headers: list | None = None) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": payload})


class GuardMiddleware:
    """Host, bearer token, body size, body-read timeout and JSON depth, before any route reads a byte of JSON.

    The body is read here up to the limit and replayed to the app; after it, `receive` is the
    server's own, so a route still sees the client disconnect."""

    def __init__(self, app, token: str, max_body_bytes: int, body_timeout_s: float = 10.0,
                 allow_unauthenticated: bool = False, allowed_origins: list = ()):
        self.app, self.token, self.max_body_bytes = app, token.encode(), max_body_bytes
        self.body_timeout_s, self.allow_unauthenticated = body_timeout_s, allow_unauthenticated
        self.origin_patterns = origin_patterns(list(allowed_origins))

    def _host_allowed(self, headers: dict) -> bool:
        if self.token:
            return True  # a token is what a rebound page cannot know
        name = host_name(headers.get(b"host", b""))
        # Someone who chose --allow-unauthenticated on a non-loopback address talks to it by IP; a name is
        # still refused, since only a name can be rebound.
        return is_loopback_host(name) or (self.allow_unauthenticated and is_ip_literal(name))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers, path = dict(scope["headers"]), scope["path"]
        if not self._host_allowed(headers):
            message = ("this server has no token and answers only to loopback Host names (localhost, 127.0.0.1, "
                       "[::1]); set --token to serve other names")
            return await send_json(send, 403, error_body(message, "forbidden_host", path))
        origin = headers.get(b"origin")
        if origin is not None:
            if not origin_allowed(origin.decode("latin-1"), self.origin_patterns):
                message = (f"requests from the web page {origin.decode('latin-1')[:100]!r} are refused: this server "
                           "answers browsers only from loopback pages and [serve].allowed_origins")
                return await send_json(send, 403, error_body(message, "forbidden_origin", path))
            if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
                return await _preflight(send, origin, headers)
            send = _with_cors(send, origin)
        if self.token and path not in UNAUTHENTICATED_PATHS:
            scheme, _, credentials = headers.get(b"authorization", b"").strip().partition(b" ")
            # RFC 7235: the scheme is case-insensitive ("bearer" is Bearer); the token itself is not
            if scheme.lower() != b"bearer" or not hmac.compare_digest(credentials.strip(), self.token):
                message = "missing or wrong bearer token (Authorization: Bearer …)"
                return await send_json(send, 401, error_body(message, "authentication", path),
                                       [(b"www-authenticate", b"Bearer")])
        too_big = error_body(f"the request body is larger than {self.max_body_bytes} bytes", "payload_too_large", path)
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            return await send_json(send, 413, too_big)
        chunks, size = [], 0
        loop = asyncio.get_running_loop()
        # One deadline for headers and body together (slow_clients.py puts it into the scope when it counted
        # from the connection's start); a body trickled a byte at a time does not renew it.
        deadline = scope.get(DEADLINE_KEY, loop.time() + self.body_timeout_s)
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                slow = f"the request body did not arrive within {self.body_timeout_s:g} s ([serve].body_timeout_s)"
                return await send_json(send, 408, error_body(slow, "timeout", path), [(b"connection", b"close")])
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                return await send_json(send, 413, too_big)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if json_depth_exceeds(body):
            message = f"the JSON body nests arrays/objects more than {MAX_JSON_DEPTH} levels deep"
            return await send_json(send, 422, error_body(message, "validation", path))
        replay = [{"type": "http.request", "body": body, "more_body": False}]

        async def replayed_receive():
            return replay.pop() if replay else await receive()

        # Every body is JSON, whatever Content-Type says (the Origin rule above guards against web pages).
        headers_as_json = [(key, value) for key, value in scope["headers"] if key != b"content-type"]
        scope = {**scope, "headers": headers_as_json + [(b"content-type", b"application/json")]}
        await self.app(scope, replayed_receive, send)


async def _preflight(send, origin: bytes, headers: dict) -> None:
    """A CORS preflight from an allowed page: say what it may send (the methods and headers it asked for)."""
    allow = [(b"access-control-allow-origin", origin), (b"vary", b"Origin"),
             (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
             (b"access-control-allow-headers", headers.get(b"access-control-request-headers", b"content-type")),
             (b"access-control-max-age", b"600"), (b"content-length", b"0")]
    if headers.get(b"access-control-request-private-network") == b"true":  # Chrome: a public page to loopback
        allow.append((b"access-control-allow-private-network", b"true"))
    await send({"type": "http.response.start", "status": 204, "headers": allow})
    await send({"type": "http.response.body", "body": b""})


def _with_cors(send, origin: bytes):
    """`send` that lets an allowed page read the answer (Access-Control-Allow-Origin on the response)."""
    async def send_with_cors(message):
        if message["type"] == "http.response.start":
            cors = [(b"access-control-allow-origin", origin), (b"vary", b"Origin"),
                    (b"access-control-expose-headers", b"x-greencode-warning, x-greencode-fim")]
            message = {**message, "headers": [*message.get("headers", []), *cors]}
        return await send(message)

    return send_with_cors
