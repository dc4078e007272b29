"""ASGI middleware for the service: a request-body limit (413) and one shape for every 400.

BentoML answers invalid input with 400 and pydantic's error list; this rewrites such bodies to
{"error": "<field>: <message>", "field": "<field>", "detail": [...]}, so a client (or a person reading a log)
sees at once which field is wrong and what to send.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["BodyLimitAndErrors", "error_message"]


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
        return {"error": str(payload)}
    detail = payload.get("detail")
    if not isinstance(detail, list) or not detail:
        return payload
    messages, fields = [], []
    for d in detail:
        field = _path(list(d.get("loc") or [])) or "body"
        msg = str(d.get("msg", "invalid"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if d.get("type") == "json_invalid":
            field, msg = "body", f"is not valid JSON ({msg}); send a JSON object"
        elif d.get("type") == "missing":
            msg = "is required"
        # A check that names the exact item ("texts[2]: ...") already carries the full field path.
        if ":" in msg and msg.split(":", 1)[0].startswith(field):
            field, msg = msg.split(":", 1)[0], msg.split(":", 1)[1].strip()
        fields.append(field)
        messages.append(f"{field}: {msg}")
    return {"error": "; ".join(messages), "field": fields[0], "detail": detail}


class BodyLimitAndErrors:
    def __init__(self, app, max_body_bytes: int = 1 << 20) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def _reply(self, send, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_big = {"error": f"body: the request body is over the limit of {limit} bytes; send fewer or shorter "
                            "inputs per request (the server's COMPRESS_MAX_BODY_BYTES)", "field": "body"}
        if declared is not None:
            try:
                if int(declared) > limit:
                    await self._reply(send, 413, too_big)
                    return
            except ValueError:
                await self._reply(send, 400, {"error": "body: Content-Length is not a number", "field": "body"})
                return
        # Read the body here (bounded), then replay it: a chunked body has no length to check up front.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._reply(send, 413, too_big)
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        state: dict[str, Any] = {"status": None, "start": None, "parts": []}

        async def capture(message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] == 400:
                    state["status"], state["start"] = 400, message
                    return
                await send(message)
                return
            if message["type"] == "http.response.body" and state["status"] == 400:
                state["parts"].append(message.get("body", b""))
                if message.get("more_body"):
                    return
                raw = b"".join(state["parts"])
                try:
                    data = json.dumps(error_message(json.loads(raw))).encode()
                except ValueError:
                    data = raw
                start = state["start"]
                hdrs = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                hdrs.append((b"content-length", str(len(data)).encode()))
                await send({**start, "headers": hdrs})
                await send({"type": "http.response.body", "body": data})
                return
            await send(message)

        await self.app(scope, replay, capture)
