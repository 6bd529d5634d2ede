"""CORS names an origin in its answers wherever the guard lets that origin's page in: a page opened at its fully
qualified name (https://app.example.org.) or an Origin that writes out the default port."""

import pytest
from fastapi.testclient import TestClient

from llm_srt.serve import ServeOptions, create_app
from llm_srt.serve.guard import check_allowed_origin, cors_origin_regex


class NoModel:
    """Nothing is translated here: the guard and CORS answer before any request reaches a model."""

    def translate(self, *args, **kw):
        raise AssertionError("no request reaches the model in these tests")


def client(*origins: str) -> TestClient:
    return TestClient(create_app(NoModel(), ServeOptions(allow_origins=origins)), base_url="http://localhost")


def preflight(c: TestClient, origin: str):
    return c.options("/v1/audio/translations", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})


@pytest.mark.parametrize("sent", ["https://app.example.org.", "https://app.example.org.:443"])
def test_a_page_at_its_fully_qualified_name_gets_its_origin_named(sent):
    """The guard let https://app.example.org. post (596eb3d), but CORSMiddleware compared the header as given: its
    preflight got 400 "Disallowed CORS origin" and no reply named the origin, so the page's browser read no answer."""
    c = client("https://app.example.org")
    answer = preflight(c, sent)
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == sent
    assert c.get("/v1/models", headers={"Origin": sent}).headers["access-control-allow-origin"] == sent


@pytest.mark.parametrize("sent", ["https://app.example.org.evil.net", "https://app.example.organ",
                                  "http://app.example.org", "https://app.example.org:8443", "https://appxexample.org"])
def test_other_origins_are_still_not_named(sent):
    c = client("https://app.example.org")
    assert preflight(c, sent).status_code in (400, 403)
    assert "access-control-allow-origin" not in c.get("/v1/models", headers={"Origin": sent}).headers


def test_the_pattern_keeps_a_given_port_and_an_ipv6_literal_exact():
    pattern = cors_origin_regex(tuple(map(check_allowed_origin, ("http://x.org:8080", "http://[::1]:8080"))))
    c = client("http://x.org:8080", "http://[::1]:8080")
    for sent in ("http://x.org.:8080", "http://[::1]:8080"):
        assert preflight(c, sent).headers["access-control-allow-origin"] == sent
    assert preflight(c, "http://x.org").status_code in (400, 403)
    assert cors_origin_regex(("*",)) is None and pattern.startswith("(?i)")
