"""An origin written with a fully qualified name's trailing dot, in --allow-origin or in a client's Origin header, is
the origin without it, as --allow-host and the Host header already were."""

import pytest
from fastapi.testclient import TestClient

from llm_srt.errors import LLMSRTError
from llm_srt.serve import ServeOptions, create_app
from llm_srt.serve.guard import HostOriginGuard, HostRule, check_allowed_origin


class NoModel:
    """Nothing is translated here: the guard and CORS answer before any request reaches a model."""

    def translate(self, *args, **kw):
        raise AssertionError("no request reaches the model in these tests")


def refusal(origins: tuple[str, ...], origin: str):
    headers = [(b"host", b"localhost:8000"), (b"origin", origin.encode())]
    return HostOriginGuard(None, HostRule(), origins).refusal({"type": "http", "method": "POST", "headers": headers,
                                                               "scheme": "http"})


@pytest.mark.parametrize("sent", ["https://app.example.org.", "https://App.Example.org.:443/"])
def test_an_origin_header_with_a_trailing_dot_is_the_allowed_origin(sent):
    """--allow-host example.org matches `Host: example.org.`, but the Origin https://app.example.org. (a page opened
    at its fully qualified name) got 403 from a server started with --allow-origin https://app.example.org."""
    assert refusal((check_allowed_origin("https://app.example.org"),), sent) is None


def test_an_allowed_origin_given_with_a_trailing_dot_lets_the_browsers_origin_post_and_read_the_answers():
    """--allow-origin https://app.example.org. was kept with its dot: every post from the page (whose browser sends
    https://app.example.org) got 403, and CORS never named it in a preflight's answer."""
    assert check_allowed_origin("https://app.example.org.") == "https://app.example.org"
    assert check_allowed_origin("http://app.example.org.:8080/") == "http://app.example.org:8080"
    options = ServeOptions(allow_origins=("https://app.example.org.",))
    assert refusal(options.allow_origins, "https://app.example.org") is None
    client = TestClient(create_app(NoModel(), options), base_url="http://localhost")
    preflight = client.options("/v1/audio/translations", headers={"Origin": "https://app.example.org",
                                                                   "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.org"


@pytest.mark.parametrize("sent", ["https://app.example.org.evil.net.", "https://evil.net.", "https://.", "null"])
def test_other_origins_with_a_dot_are_still_refused(sent):
    status, _, param = refusal((check_allowed_origin("https://app.example.org."),), sent)
    assert status == 403 and param == "origin"


@pytest.mark.parametrize("given", ["https://.", "https://..", "http://.:8080"])
def test_an_allowed_origin_of_dots_alone_is_refused_at_start(given):
    with pytest.raises(LLMSRTError, match="--allow-origin"):
        check_allowed_origin(given)
