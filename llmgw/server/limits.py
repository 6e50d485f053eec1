"""Request size limits in the endpoint's own error shape: headers (431, whatever HTTP parser
uvicorn runs) and the body (413), the body's before it reaches JSON parsing: by
Content-Length when sent, else by counting what arrives."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmgw.server.errors import FrontError, api_of, front_error_response


class RequestLimits:
    def __init__(self, app: ASGIApp, *, max_bytes: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + sum(
            len(name) + len(value) + 4 for name, value in scope["headers"])
        if head > self.max_header_bytes:
            error = FrontError(431, "request_header_fields_too_large",
                               f"The request line and headers are over {self.max_header_bytes} "
                               "bytes. Send fewer or shorter headers.")
            await front_error_response(error, api_of(scope["path"]))(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:  # buffer the body (at most max_bytes), then hand it on
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = FrontError(413, "request_too_large",
                           f"The request body is over the server's limit of {self.max_bytes} "
                           "bytes. Send less (fewer or shorter messages), or raise "
                           "LLMGW_SERVE_MAX_BODY_BYTES.")
        response = front_error_response(error, api_of(scope["path"]))
        response.headers["connection"] = "close"  # the rest of the body is not read
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


