"""--allow-host and --allow-origin as an operator may write them: each is matched against what a client sends (a Host
header's name, a browser's Origin), whatever the spelling it was given in."""

import pytest
from fastapi.testclient import TestClient

from llm_srt.errors import LLMSRTError
from llm_srt.serve import ServeOptions, create_app
from llm_srt.serve.guard import HostOriginGuard, HostRule, check_allowed_origin


class NoModel:
    """Nothing is translated here: the guard answers before any request reaches a model."""

    def translate(self, *args, **kw):
        raise AssertionError("no request reaches the model in these tests")


def refusal(rule: HostRule, host: str, origins: tuple[str, ...] = (), origin: str | None = None):
    headers = [(b"host", host.encode())] + ([(b"origin", origin.encode())] if origin else [])
    return HostOriginGuard(None, rule, origins).refusal({"type": "http", "method": "POST", "headers": headers,
                                                         "scheme": "http"})


@pytest.mark.parametrize("allowed, host", [
    ("[2001:db8::5]", "[2001:db8::5]:8000"),  # an IPv6 literal in brackets, as a URL writes it
    ("2001:DB8::5", "[2001:db8::5]"),
    ("example.org.", "example.org"),  # a fully qualified name's trailing dot
    (".example.org.", "a.example.org"),
    ("*.Example.org.", "a.b.example.org"),
    (".example.org", "example.org."),
])
def test_an_allowed_host_matches_the_host_header_it_names(allowed, host):
    assert refusal(HostRule("127.0.0.1", (allowed,)), host) is None


def test_an_allowed_host_still_lets_in_only_the_names_it_gives():
    rule = HostRule("127.0.0.1", (".example.org.", "[2001:db8::5]"))
    for host in ("evilexample.org", "example.org.evil.net", "[2001:db8::6]", "2001"):
        assert refusal(rule, host)[0] == 421


def test_the_bound_name_written_with_its_trailing_dot_is_answered():
    assert refusal(HostRule("translate.example.org."), "translate.example.org:8000") is None


@pytest.mark.parametrize("given, kept", [
    ("https://app.example.org:443", "https://app.example.org"),  # the scheme's default port: a browser omits it
    ("http://App.Example.org:80/", "http://app.example.org"),  # a URL copied from the address bar
    ("https://app.example.org:8443", "https://app.example.org:8443"),
    ("http://[::1]:3000", "http://[::1]:3000"),
    ("*", "*"),
])
def test_an_allowed_origin_is_kept_as_a_browser_sends_it(given, kept):
    assert check_allowed_origin(given) == kept
    assert check_allowed_origin(kept) == kept


@pytest.mark.parametrize("given", ["https://app.example.org:99999", "https://app.example.org:x",
                                   "https://app.example.org/app", "app.example.org"])
def test_what_is_no_origin_is_refused_at_start(given):
    with pytest.raises(LLMSRTError, match="--allow-origin"):
        check_allowed_origin(given)


def test_an_origin_allowed_with_its_default_port_may_post_and_read_the_answers():
    options = ServeOptions(allow_origins=("https://app.example.org:443",))
    assert refusal(HostRule(), "localhost:8000", options.allow_origins, "https://app.example.org") is None
    client = TestClient(create_app(NoModel(), options), base_url="http://localhost")
    preflight = client.options("/v1/audio/translations", headers={"Origin": "https://app.example.org",
                                                                   "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.org"
    listing = client.get("/v1/models", headers={"Origin": "https://app.example.org"})
    assert listing.headers["access-control-allow-origin"] == "https://app.example.org"
