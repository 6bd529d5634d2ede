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
    assert json.loads(raw.split(b"\r\n\r\n", 1)[1]) == {"error": {"message": "bad bytes", "type": "invalid_request_error",
                                                                  "param": None, "code": None}}

