"""A 404 has OpenAI's shape: an unknown route or model is type "invalid_request_error" (it was "not_found_error", a
type OpenAI never sends), an unknown model with code "model_not_found"; the status stays 404."""

from fastapi.testclient import TestClient

from llm_srt.serve import ServeOptions, create_app


class NoModel:
    """Nothing is translated here: a 404 comes before any request reaches a model."""

    def translate(self, *args, **kw):
        raise AssertionError("no request reaches the model in these tests")


def client(**options) -> TestClient:
    return TestClient(create_app(NoModel(), ServeOptions(**options)), base_url="http://localhost")


def test_an_unknown_route_is_openais_invalid_request_404():
    for method in ("GET", "POST", "DELETE"):
        r = client().request(method, "/v1/audio/nowhere")
        assert r.status_code == 404 and r.json() == {"error": {
            "message": "no such endpoint /v1/audio/nowhere; see / for the page and /openapi.json for the API",
            "type": "invalid_request_error", "param": None, "code": None}}, r.text


def test_an_unknown_model_is_openais_model_not_found_404():
    r = client(model_name="my/model").get("/v1/models/whisper-1")
    assert r.status_code == 404 and r.json() == {"error": {
        "message": "model 'whisper-1' not found: this server serves 'my/model' (see GET /v1/models)",
        "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}, r.text
