"""ASGI middleware for the service: one JSON shape for every client error, and one log line per rejected request.

- POST to an API route needs `Content-Type: application/json` (charset, if given, utf-8): anything else (form
  data, multipart, text/plain, XML, none) gets 415 before BentoML parses the body, since its other decoders accept
  bodies this service does not (text/plain parsed as JSON) or fail with a server error (multipart without parts).
- A body over the limit gets 413, whether it declares its length or is sent chunked.
- Every 4xx and 503 answer, BentoML's and Starlette's (400 with pydantic's error list, 404 and 405 as plain text,
  503 from the dispatcher) is rewritten to {"error": "<field>: <what is wrong and what to send>", "field":
  "<field>" or null, "detail": [...] (400 only)}; a 503 also gets `Retry-After`.
- One line per rejected request (`bentoml.compress.rejected`, INFO: method, path, status, message); the
  service's log filter drops BentoML's traceback for client errors (`quiet_client_errors`), so tracebacks are left
  for real server faults.
"""

from __future__ import annotations

import json
import logging
from typing import Any

__all__ = ["BodyLimitAndErrors", "error_message", "quiet_client_errors"]

log = logging.getLogger("bentoml.compress.rejected")

RETRY_AFTER_S = 1  # what a 503 tells the client to wait before trying again (seconds)
_REASONS = {404: "no such endpoint", 405: "method not allowed", 413: "body too large", 415: "unsupported media type",
            503: "overloaded"}


def _path(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def error_message(payload: Any) -> dict[str, Any]:
    """The single-message form of a BentoML/pydantic 400 body."""
    if isinstance(payload, list) and len(payload) == 1 and isinstance(payload[0], dict):
        payload = payload[0]  # BentoML wraps BentoMLException bodies in a one-element list
    if not isinstance(payload, dict):
        return {"error": str(payload), "field": None}
    detail = payload.get("detail")
    if not isinstance(detail, list) or not detail:
        return {"error": str(payload.get("error") or payload.get("detail") or "bad request"),
                "field": payload.get("field")}
    messages, fields = [], []
    for d in detail:
        field = _path(list(d.get("loc") or [])) or "body"
        msg = str(d.get("msg", "invalid"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        kind = d.get("type")
        if kind == "json_invalid":
            field, msg = "body", f"is not valid JSON ({msg}); send a JSON object"
        elif kind == "missing":
            msg = "is required"
        elif kind in ("string_too_short", "string_pattern_mismatch"):
            msg = "is empty; send non-empty text"
        elif kind == "string_type":
            msg = "expected a string"
        elif kind == "string_too_long":
            msg = f"{msg} (as much as this model reads); shorten it"
        elif kind in ("too_short", "too_long") and field.count("[") >= 1 and field.endswith("]"):
            msg = f"{msg}; send [first, second] for this sentence-pair model"
        # A check that names the exact item ("texts[2]: ...") already carries the full field path.
        if ":" in msg and msg.split(":", 1)[0].startswith(field):
            field, msg = msg.split(":", 1)[0], msg.split(":", 1)[1].strip()
        fields.append(field)
        messages.append(f"{field}: {msg}")
    return {"error": "; ".join(messages), "field": fields[0], "detail": detail}


def _media_type_error(headers: dict[bytes, bytes]) -> str | None:
    """Why the request's Content-Type is refused (None when it is JSON in UTF-8)."""
    raw = headers.get(b"content-type")
    if raw is None:
        return "body: no Content-Type; send the JSON body with Content-Type: application/json"
    value = raw.decode("latin-1")
    media, *params = [p.strip() for p in value.split(";")]
    if media.lower() != "application/json":
        return f"body: Content-Type {media or value!r} is not supported; send JSON with Content-Type: application/json"
    for p in params:
        key, _, v = p.partition("=")
        if key.strip().lower() == "charset" and v.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return f"body: charset {v.strip()!r} is not supported; JSON is sent in UTF-8 (charset=utf-8)"
    return None


def _plain(raw: bytes) -> str:
    try:
        payload = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip()
    if isinstance(payload, dict):
        return str(payload.get("error") or payload.get("detail") or "")
    if isinstance(payload, list) and payload and isinstance(payload[0], dict):
        return str(payload[0].get("error") or "")
    return str(payload)


class BodyLimitAndErrors:
    def __init__(self, app, max_body_bytes: int = 1 << 20, api_paths: tuple[str, ...] = ("/classify", "/answer"),
                 retry_after_s: int = RETRY_AFTER_S, openapi=None, max_inflight: int | None = None,
                 ready_below: int | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.api_paths = frozenset(api_paths)
        self.retry_after_s = retry_after_s
        self.openapi = openapi  # doc -> doc: applied to GET /docs.json (serve/schema.py's truthful_openapi)
        # Load shedding and readiness, per worker process: API requests in progress (admitted, not yet answered).
        # At max_inflight a new one gets 503 with Retry-After at once; from ready_below on, /readyz answers 503 so a
        # load balancer sends new connections elsewhere until the queue drains.
        self.max_inflight = max_inflight
        self.ready_below = ready_below if ready_below is not None else (
            None if max_inflight is None else max(1, (3 * max_inflight) // 4))
        self.inflight = 0

    async def _reply(self, scope, send, status: int, body: dict[str, Any], extra: list | None = None) -> None:
        data = json.dumps(body).encode()
        _log_rejected(scope, status, body.get("error", ""))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                                *(extra or [])]})
        await send({"type": "http.response.body", "body": data})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if scope.get("method") == "GET" and scope.get("path") == "/readyz" and self.ready_below is not None \
                and self.inflight >= self.ready_below:
            await self._reply(scope, send, 503, {
                "error": f"busy: {self.inflight} requests in progress on this worker (ready below "
                         f"{self.ready_below}); send new traffic elsewhere", "field": None},
                [(b"retry-after", str(self.retry_after_s).encode())])
            return
        if scope.get("method") == "POST" and scope.get("path") in self.api_paths:
            if (why := _media_type_error(headers)) is not None:
                await self._reply(scope, send, 415, {"error": why, "field": "body"})
                return
            if self.max_inflight is not None and self.inflight >= self.max_inflight:
                await self._reply(scope, send, 503, {
                    "error": f"overloaded: {self.inflight} requests in progress on this worker (COMPRESS_MAX_QUEUE="
                             f"{self.max_inflight}); retry after {self.retry_after_s} s", "field": None},
                    [(b"retry-after", str(self.retry_after_s).encode())])
                return
            self.inflight += 1
            try:
                await self._admitted(scope, receive, send, headers)
            finally:
                self.inflight -= 1
            return
        if self.openapi is not None and scope.get("method") == "GET" and scope.get("path") == "/docs.json":
            await self.app(scope, receive, self._rewriting_docs(send))
            return
        await self.app(scope, receive, self._capturing(scope, send))

    async def _admitted(self, scope, receive, send, headers) -> None:
        """An API request past the media-type and load checks: bounded body, then the app."""
        body = await self._read_body(scope, receive, send, headers)
        if body is None:
            return
        if not body.strip():
            await self._reply(scope, send, 400, {"error": "body: is empty; send a JSON object, e.g. "
                                                          '{"texts": ["a sentence"]}', "field": "body"})
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, self._capturing(scope, send))

    def _rewriting_docs(self, send):
        """`send`, with the OpenAPI document passed through `self.openapi` (a 200 only)."""
        state: dict[str, Any] = {"start": None, "parts": []}

        async def rewrite(message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] != 200:
                    await send(message)
                    return
                state["start"] = message
                return
            if message["type"] == "http.response.body" and state["start"] is not None:
                state["parts"].append(message.get("body", b""))
                if message.get("more_body"):
                    return
                data = json.dumps(self.openapi(json.loads(b"".join(state["parts"])))).encode()
                hdrs = [(k, v) for k, v in state["start"].get("headers", []) if k.lower() != b"content-length"]
                await send({**state["start"], "headers": hdrs + [(b"content-length", str(len(data)).encode())]})
                await send({"type": "http.response.body", "body": data})
                return
            await send(message)

        return rewrite

    async def _read_body(self, scope, receive, send, headers) -> bytes | None:
        """The whole body, bounded by the limit (None when the answer was sent: 413, or the client left)."""
        limit = self.max_body_bytes
        too_big = {"error": f"body: the request body is over the limit of {limit} bytes; send fewer or shorter "
                            "inputs per request (the server's COMPRESS_MAX_BODY_BYTES)", "field": "body"}
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    await self._reply(scope, send, 413, too_big)
                    return None
            except ValueError:
                await self._reply(scope, send, 400, {"error": "body: Content-Length is not a number",
                                                     "field": "body"})
                return None
        chunks, size = [], 0
        while True:  # a chunked body has no length to check up front
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._reply(scope, send, 413, too_big)
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    def _capturing(self, scope, send):
        """`send`, with every client-error and 503 answer rewritten to the JSON error body."""
        state: dict[str, Any] = {"status": None, "start": None, "parts": []}

        async def capture(message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                if 400 <= status < 500 or status == 503:
                    state["status"], state["start"] = status, message
                    return
                await send(message)
                return
            if message["type"] == "http.response.body" and state["status"] is not None:
                state["parts"].append(message.get("body", b""))
                if message.get("more_body"):
                    return
                status, start = state["status"], state["start"]
                raw = b"".join(state["parts"])
                body = self._error_body(status, raw, scope)
                _log_rejected(scope, status, body["error"])
                data = json.dumps(body).encode()
                keep = [(k, v) for k, v in start.get("headers", [])
                        if k.lower() not in (b"content-length", b"content-type")]
                keep += [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
                if status == 503 and not any(k.lower() == b"retry-after" for k, _ in keep):
                    keep.append((b"retry-after", str(self.retry_after_s).encode()))
                await send({**start, "headers": keep})
                await send({"type": "http.response.body", "body": data})
                return
            await send(message)

        return capture

    def _error_body(self, status: int, raw: bytes, scope) -> dict[str, Any]:
        if status == 400:
            try:
                return error_message(json.loads(raw))
            except ValueError:
                return {"error": f"body: {raw.decode('utf-8', 'replace').strip() or 'bad request'}", "field": "body"}
        if status == 404:
            served = " or ".join(sorted(self.api_paths)) or "nothing"
            return {"error": f"{scope.get('method')} {scope.get('path')}: no such endpoint; this service answers POST "
                             f"{served} (see /docs.json)", "field": None}
        if status == 405:
            return {"error": f"{scope.get('method')} {scope.get('path')}: method not allowed; "
                             f"{'POST a JSON body' if scope.get('path') in self.api_paths else 'use GET'}",
                    "field": None}
        if status == 503:
            msg = _plain(raw) or "the server is overloaded"
            return {"error": f"{msg}; retry after {self.retry_after_s} s", "field": None}
        msg = _plain(raw)
        try:
            payload = json.loads(raw)
            if isinstance(payload, dict) and "error" in payload:
                return {"error": str(payload["error"]), "field": payload.get("field")}
        except ValueError:
            pass
        return {"error": msg or _REASONS.get(status, "client error"), "field": None}


def _log_rejected(scope, status: int, message: str) -> None:
    log.info("rejected %s %s %d: %s", scope.get("method"), scope.get("path"), status, message[:300])


class _ClientErrorFilter(logging.Filter):
    """Drops BentoML's traceback record for a client's mistake (a validation error or a 4xx); the middleware has
    logged one line for it. Real server faults keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            return False
        code = getattr(getattr(exc, "error_code", None), "value", None)
        return not (isinstance(code, int) and 400 <= code < 500)


def quiet_client_errors() -> None:
    """Install the filter on the logger BentoML writes request exceptions to (once)."""
    target = logging.getLogger("bentoml._internal.server.http_app")
    if not any(isinstance(f, _ClientErrorFilter) for f in target.filters):
        target.addFilter(_ClientErrorFilter())
