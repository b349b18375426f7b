"""A bound on request bodies, judged before they are read (OWASP API4: resource use).

A declared `Content-Length` over the bound is answered `413` at once, without reading a
byte of the body; a chunked body is counted as it arrives and cut off at the bound. The
bound is set from `submission.max_message_size` (the biggest message any door takes),
with room for JSON and base64.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from secumail.api.problems import problem_response


class _TooLarge(Exception):
    pass


def body_bound(max_message_size: int) -> int:
    """JSON with base64 attachments is 4/3 of the message, escaped text up to 2×."""
    return 2 * max_message_size + 1024 * 1024


class BodyLimit:
    """Pure ASGI middleware: at most `max_body` octets per request body."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            await self._refuse(scope, receive, send)
            return
        seen = 0
        started = refused = False

        async def counted() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    if not started and not refused:
                        # Answered here: whatever the app makes of the error is dropped.
                        refused = True
                        await self._refuse(scope, receive, send)
                    raise _TooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not refused:
                raise

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            413,
            "too-large",
            f"request bodies are limited to {self.max_body} octets",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)
