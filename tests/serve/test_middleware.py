"""The middleware on its own, with a stand-in ASGI app: load shedding and readiness under overload (no server)."""

from __future__ import annotations

import asyncio
import json

from serve.middleware import BodyLimitAndErrors


def _request(path="/classify", method="POST", body=b'{"texts": ["a"]}', ctype=b"application/json"):
    scope = {"type": "http", "method": method, "path": path,
             "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]}
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    return scope, receive, send, sent


def _answer(sent):
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    try:
        return start["status"], dict(start["headers"]), json.loads(body)
    except ValueError:
        return start["status"], dict(start["headers"]), body


def test_overload_sheds_with_retry_after_and_readiness_follows_the_queue():
    release = asyncio.Event()

    async def slow_app(scope, receive, send):  # holds every API request until released
        if scope["path"] == "/readyz":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        await receive()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"[]"})

    mw = BodyLimitAndErrors(slow_app, max_inflight=4, ready_below=3)

    async def run():
        held = [_request() for _ in range(4)]
        tasks = [asyncio.create_task(mw(scope, recv, send)) for scope, recv, send, _ in held]
        await asyncio.sleep(0.01)
        assert mw.inflight == 4
        scope, recv, send, sent = _request()  # the fifth: shed at once
        await mw(scope, recv, send)
        status, headers, body = _answer(sent)
        assert status == 503 and headers[b"retry-after"] == b"1" and "overloaded: 4 requests" in body["error"]
        assert body["field"] is None
        scope, recv, send, sent = _request("/readyz", "GET", b"")
        await mw(scope, recv, send)
        assert _answer(sent)[0] == 503 and "busy" in _answer(sent)[2]["error"]
        release.set()
        await asyncio.gather(*tasks)
        assert all(_answer(s)[0] == 200 for *_, s in held) and mw.inflight == 0
        scope, recv, send, sent = _request("/readyz", "GET", b"")
        await mw(scope, recv, send)
        assert _answer(sent)[0] == 200  # drained: ready again

    asyncio.run(run())


def test_a_refused_request_does_not_count_as_in_progress():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"[]"})

    mw = BodyLimitAndErrors(app, max_inflight=1)

    async def run():
        for ctype, want in ((b"text/plain", 415), (b"application/json", 200)):
            scope, recv, send, sent = _request(ctype=ctype)
            await mw(scope, recv, send)
            assert _answer(sent)[0] == want
        scope, recv, send, sent = _request(body=b"   ")
        await mw(scope, recv, send)
        assert _answer(sent)[0] == 400 and mw.inflight == 0

    asyncio.run(run())
