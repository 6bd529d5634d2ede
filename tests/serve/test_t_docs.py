"""The API's own description works offline: no page the server answers loads a script or style from the network, and
the 404 sends users only to pages that answer; the schema builds without a warning, and HEAD still answers."""

import re
import warnings

from serve_helpers import local_client

from llm_srt.serve import create_app

NETWORK_ASSET = re.compile(r"""(src|href)\s*=\s*["']?(https?:)?//""", re.IGNORECASE)


class Stub:
    """A translator that is never called: these tests read the server's pages, not the model."""

    name, system = "stub", None

    def translate(self, *args, **kw):
        raise AssertionError("no request here reaches the model")


def works_offline(client, path: str) -> None:
    """`path` answers 200 and, where it is a page, loads nothing from the network."""
    r = client.get(path)
    assert r.status_code == 200, f"{path} answers {r.status_code}"
    if r.headers.get("content-type", "").startswith("text/html"):
        assert not NETWORK_ASSET.search(r.text), f"{path} loads {NETWORK_ASSET.search(r.text)[0]!r}"


def test_no_page_loads_a_network_asset():
    """/docs and /redoc were FastAPI's Swagger UI and ReDoc, whose scripts come from a CDN: blank offline. Every
    GET route must work without the network."""
    app = create_app(Stub())
    with local_client(app) as c:
        for route in app.routes:
            if "GET" in getattr(route, "methods", ()) and "{" not in route.path:
                works_offline(c, route.path)
        schema = c.get("/openapi.json")
        assert schema.status_code == 200 and schema.json()["paths"]["/v1/audio/translations"]["post"]


def test_the_404_names_only_pages_that_answer():
    """The 404 pointed at /docs, a page that stays blank offline; each path it names now answers, offline too."""
    with local_client(create_app(Stub())) as c:
        r = c.get("/no/such/page")
        message = r.json()["error"]["message"]
        assert r.status_code == 404 and message.startswith("no such endpoint /no/such/page; "), message
        named = re.findall(r"(?<![\w/])/[\w./-]*", message.split("; ", 1)[1])
        assert "/" in named and "/openapi.json" in named, message
        for path in named:
            works_offline(c, path)


def test_the_schema_builds_without_a_warning():
    """/health and /v1/models answered GET and HEAD from one route, which FastAPI describes as two operations of
    one id: each GET /openapi.json wrote "UserWarning: Duplicate Operation ID ..." into the server's log."""
    app = create_app(Stub())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        schema = app.openapi()
    operations = [op for item in schema["paths"].values() for op in item.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids)), ids
    assert set(schema["paths"]["/health"]) == {"get"} and set(schema["paths"]["/v1/models"]) == {"get"}


def test_head_still_answers_where_get_does():
    """Uptime checks and proxies probe /health, /v1/models and / with HEAD: the same status and headers, no body."""
    with local_client(create_app(Stub())) as c:
        for path in ("/health", "/v1/models", "/"):
            got, head = c.get(path), c.head(path)
            assert head.status_code == got.status_code == 200 and head.content == b"", path
            assert head.headers["content-type"] == got.headers["content-type"], path
            allow = c.delete(path).headers.get("allow", "")
            assert set(allow.split(", ")) == {"GET", "HEAD"}, (path, allow)  # a 405 names both
        assert c.head("/v1/languages").status_code == 405  # GET alone, as before
