"""The Origin check against --allow-origin: an Origin header is compared in the form the allowed origins are kept in."""

import pytest

from llm_srt.serve.guard import HostOriginGuard, HostRule, check_allowed_origin


def refusal(origins: tuple[str, ...], origin: str, scheme: str = "http"):
    headers = [(b"host", b"localhost:8000"), (b"origin", origin.encode())]
    return HostOriginGuard(None, HostRule(), origins).refusal({"type": "http", "method": "POST", "headers": headers,
                                                               "scheme": scheme})


@pytest.mark.parametrize("sent", ["https://app.example.org:443", "HTTPS://App.Example.org:443/",
                                  "https://app.example.org"])
def test_an_origin_with_the_default_port_written_out_is_the_allowed_origin(sent):
    """A non-browser client (a script, a proxy) that writes the scheme's default port out in its Origin got 403 from
    a server started with --allow-origin https://app.example.org, the very site it names: the header was compared
    as sent, while the allowed origins are kept without the default port."""
    allowed = (check_allowed_origin("https://app.example.org"),)
    assert refusal(allowed, sent) is None


@pytest.mark.parametrize("sent", ["https://app.example.org:8443", "http://app.example.org:443",
                                  "https://app.example.org.evil.net:443", "https://app.example.org/x", "null",
                                  "https://user@app.example.org"])
def test_other_origins_are_still_refused(sent):
    allowed = (check_allowed_origin("https://app.example.org"),)
    status, message, param = refusal(allowed, sent)
    assert status == 403 and param == "origin" and message.startswith("cross-origin POST from")
