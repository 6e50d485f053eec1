"""`scrub_exception`: a provider's exception, made safe to stay reachable from ours."""

from __future__ import annotations

import httpx

from llmgw.redact import Redactor, scrub_exception

KEY = "sk-unit-SECRET-0123456789"


class ProviderError(Exception):
    def __init__(self, message: str, response: httpx.Response) -> None:
        super().__init__(message, {"error": {"message": message}})
        self.message = message
        self.response = response
        self.body = {"error": {"message": message}}
        self.status_code = response.status_code


def _raised() -> ProviderError:
    request = httpx.Request("POST", f"http://127.0.0.1:1/v1/chat?key={KEY}",
                            headers={"Authorization": f"Bearer {KEY}"}, content=b"{}")
    response = httpx.Response(401, headers={"retry-after": "3"}, request=request,
                              content=f"Incorrect API key provided: {KEY}".encode())
    try:
        try:
            raise ValueError(f"inner {KEY}")
        except ValueError as inner:
            raise ProviderError(f"Incorrect API key provided: {KEY}", response) from inner
    except ProviderError as exc:
        return exc


def test_text_is_scrubbed_and_the_wrapped_chain_and_headers_are_gone() -> None:
    exc = _raised()
    scrub_exception(exc, Redactor([KEY]))
    assert exc.__cause__ is None and exc.__context__ is None
    assert exc.message == exc.args[0] == "Incorrect API key provided: ***"
    assert exc.body == {"error": {"message": "Incorrect API key provided: ***"}}
    # What our error mapping still reads survives: the status and the response's headers.
    assert exc.response.status_code == 401 and exc.response.headers["retry-after"] == "3"
    reachable = [repr(vars(exc)), repr(exc.args), str(exc.response.request.url),
                 repr(exc.response.request.headers), exc.response.text]
    assert not any(KEY in text for text in reachable)


def test_an_unknown_key_shaped_secret_is_scrubbed_too() -> None:
    exc = _raised()
    scrub_exception(exc, Redactor())  # the key is not in the config: its shape gives it away
    assert KEY not in repr(vars(exc)) + repr(exc.args)
