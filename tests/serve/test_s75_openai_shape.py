"""What an OpenAI client reads of the server: the error's "code" key, GET /v1/models/{id}, and (with
--allow-origin) the retry headers a page's SDK must be able to read."""

import json

from fastapi.testclient import TestClient

from llm_srt.serve import ServeOptions, create_app
from llm_srt.serve.guard import raw_error


class NoModel:
    """Nothing is translated here: these answers come before any request reaches a model."""

    def translate(self, *args, **kw):
        raise AssertionError("no request reaches the model in these tests")


def client(**options) -> TestClient:
    return TestClient(create_app(NoModel(), ServeOptions(**options)), base_url="http://localhost")


def test_every_error_carries_openais_code_key():
    """The error JSON was {"message", "type", "param"}: OpenAI always sends "code" too (null where none)."""
    c = client()
    for r in (c.get("/v1/nowhere"), c.post("/v1/audio/translations", data={"target_language": "deu"}),
              c.delete("/v1/models")):
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["code"] is None, r.text
    raw = raw_error(400, "Bad Request", "bad bytes")  # the guard's answer to what h11 cannot parse
    body = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    assert body == {"error": {"message": "bad bytes", "type": "invalid_request_error", "param": None, "code": None}}


def test_a_model_is_retrieved_by_its_id():
    """client.models.retrieve(NAME) got 404 "no such endpoint /v1/models/NAME": only the list route existed."""
    c = client(model_name="my/model")
    listed = c.get("/v1/models").json()["data"][0]
    for method in (c.get, c.head):
        assert method("/v1/models/my/model").status_code == 200
    assert c.get("/v1/models/my/model").json() == listed and listed["id"] == "my/model"
    r = c.get("/v1/models/whisper-1")
    err = r.json()["error"]
    assert r.status_code == 404 and err["code"] == "model_not_found" and err["param"] == "model", r.text
    assert "'whisper-1'" in err["message"] and "\n" not in err["message"]


def test_a_page_can_read_the_retry_headers():
    """Only X-LLM-SRT-Error and -Warning were exposed: a page's openai-node could not read x-should-retry (504)
    nor Retry-After (503), and retried the 504s it must not."""
    c = client(allow_origins=("https://app.example.org",))
    r = c.get("/v1/models", headers={"Origin": "https://app.example.org"})
    exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
    assert {"x-should-retry", "retry-after", "x-llm-srt-error", "x-llm-srt-warning"} <= exposed, exposed
