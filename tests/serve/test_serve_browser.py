"""The web page in headless Chromium (driven over the DevTools pipe): upload a generated clip, record from the
fake microphone, and see transcript, translation and segments appear. Skips when Chromium is not installed."""

import pytest
import tiny
from cdp_pipe import Browser, find_chromium
from serve_helpers import DECODING, bursts, live_server, wav_bytes

from llm_srt.infer import SpeechTranslator
from llm_srt.serve import BatchOptions, ServeOptions, create_app

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make setup installs it: "
                                "apt-get install chromium)")

TEXT = "document.getElementById({!r}).textContent"
STATE = "document.body.dataset.state"


@pytest.fixture(scope="module")
def page(translator, tmp_path_factory):
    app = create_app(translator, ServeOptions(batch=BatchOptions(decoding=DECODING)))
    with live_server(app) as url:
        browser = Browser(CHROMIUM, tmp_path_factory.mktemp("chromium-profile"))
        try:
            browser.goto(url + "/")
            browser.wait_for(f"{STATE} === 'idle' && document.getElementById('tgt').options.length > 10")
            yield browser
        finally:
            browser.close()


def choose(page, src: str, tgt: str, task: str) -> None:
    page.js(f"document.getElementById('src').value = {src!r}; document.getElementById('tgt').value = {tgt!r};"
            f"document.getElementById('task').value = {task!r}")


def test_upload_a_clip_and_see_the_translation(page, translator, clip, tmp_path):
    samples, wav = clip
    path = tmp_path / "clip.wav"
    path.write_bytes(wav)
    want = translator.translate([samples], "eng", "deu", options=DECODING)[0]
    choose(page, "eng", "deu", "srt")
    page.set_files("#file", [str(path)])
    assert page.wait_for(f"{TEXT.format('status')}.includes('clip.wav')")
    page.click("#submit")
    assert page.wait_for(f"['done', 'error'].includes({STATE}) && {STATE}") == "done", page.js(TEXT.format("error"))
    assert page.js(TEXT.format("translation")) == want.translation
    assert page.js(TEXT.format("transcript")) == want.transcript
    assert page.js("document.getElementById('segments-box').hidden") is True  # one segment: nothing to list
    shot = page.screenshot(tmp_path / "page.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000


def test_long_audio_lists_its_segments(page, tmp_path):
    path = tmp_path / "long.wav"
    path.write_bytes(wav_bytes(bursts(40.0)))
    choose(page, "eng", "fra", "srt")
    page.set_files("#file", [str(path)])
    page.click("#submit")
    assert page.wait_for(f"['done', 'error'].includes({STATE}) && {STATE}") == "done", page.js(TEXT.format("error"))
    rows = page.js("[...document.querySelectorAll('#segments tr')].map(r => r.cells[0].textContent)")
    assert len(rows) >= 2 and rows[0].startswith("0:00.0")
    assert page.js("document.getElementById('segments-box').hidden") is False
    page.screenshot(tmp_path / "segments.png")


def test_record_from_the_microphone(page, tmp_path):
    choose(page, "eng", "deu", "asr")
    page.click("#record")
    page.wait_for(f"{STATE} === 'recording'")
    page.js("new Promise(r => setTimeout(r, 1500))")
    page.click("#record")
    recorded = page.wait_for(f"{STATE} === 'recorded' && {TEXT.format('status')}")
    seconds = float(recorded.split()[1])
    assert 1.0 < seconds < 4.0, recorded
    page.click("#submit")
    assert page.wait_for(f"['done', 'error'].includes({STATE}) && {STATE}") == "done", page.js(TEXT.format("error"))
    assert page.js(TEXT.format("transcript")) and page.js("document.getElementById('translation-box').hidden")
    assert page.js(TEXT.format("lang")).startswith("(english, ")  # verbose_json's source_language: OpenAI's name
    page.screenshot(tmp_path / "recorded.png")


def test_the_page_asks_for_the_beam_and_token_cap_chosen_within_the_servers_limits(translator, clip, tmp_path):
    """The page reads the server's limits (/health), offers them, and the request decodes as chosen: beam 2 and a
    cap of 3 tokens write what the model writes with those options."""
    from llm_srt.model.decoding import DecodingOptions

    samples, wav = clip
    path = tmp_path / "clip.wav"
    path.write_bytes(wav)
    chosen = DecodingOptions(beam_size=2, max_new_tokens=3)
    want = translator.translate([samples], "eng", "deu", options=chosen)[0]
    assert want.translation != translator.translate([samples], "eng", "deu", options=DECODING)[0].translation
    app = create_app(translator, ServeOptions(max_beam=4, batch=BatchOptions(decoding=DECODING)))
    with live_server(app) as url:
        browser = Browser(CHROMIUM, tmp_path / "chromium-profile")
        try:
            browser.goto(url + "/")
            browser.wait_for(f"{STATE} === 'idle' && document.getElementById('tgt').options.length > 10")
            limits = browser.js("['beam', 'maxtok'].map(k => [document.getElementById(k).value, "
                                "document.getElementById(k).max])")
            assert limits == [["1", "4"], [str(DECODING.max_new_tokens)] * 2]  # the server's own, and its limits
            choose(browser, "eng", "deu", "srt")
            browser.js("document.getElementById('beam').value = '2'; document.getElementById('maxtok').value = '3'")
            browser.set_files("#file", [str(path)])
            browser.click("#submit")
            assert browser.wait_for(f"['done', 'error'].includes({STATE}) && {STATE}") == "done", \
                browser.js(TEXT.format("error"))
            assert browser.js(TEXT.format("translation")) == want.translation
            assert browser.js(TEXT.format("transcript")) == want.transcript
        finally:
            browser.close()


def test_under_a_sub_path_the_page_works_and_says_what_failed_or_was_silent(translator, tmp_path, monkeypatch):
    """Behind a proxy that serves it under /llm-srt/ the page calls the API under that path (it asked the proxy's
    root before); audio without speech says so, and a request answered in part says which segment failed."""
    import numpy as np
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from llm_srt.model.systems import SpeechLLMSystem

    inner = create_app(translator, ServeOptions(batch=BatchOptions(decoding=DECODING)))
    outer = Starlette(routes=[Mount("/llm-srt", app=inner)], lifespan=lambda app: inner.router.lifespan_context(inner))
    silence, long = tmp_path / "silence.wav", tmp_path / "long.wav"
    silence.write_bytes(wav_bytes(np.zeros(32000, dtype=np.float32)))
    long.write_bytes(wav_bytes(bursts(40.0)))
    real, calls = SpeechLLMSystem.run_batch, []

    def first_row_of_the_long_clip_fails(self, items, options):
        outputs = real(self, items, options)
        calls.append(len(items))
        if len(calls) == 1:  # the long clip's first batch (the silent one has no segment to run)
            outputs[0] = type(outputs[0])(error="RuntimeError: this segment fails")
        return outputs

    monkeypatch.setattr(SpeechLLMSystem, "run_batch", first_row_of_the_long_clip_fails)
    with live_server(outer) as url:
        browser = Browser(CHROMIUM, tmp_path / "chromium-profile")
        try:
            browser.goto(url + "/llm-srt/")
            browser.wait_for(f"{STATE} === 'idle' && document.getElementById('tgt').options.length > 10")
            choose(browser, "eng", "deu", "srt")
            for path, note in ((silence, "No speech was found in this audio."),
                               (long, "Part of the audio failed: 1 of ")):
                browser.set_files("#file", [str(path)])
                browser.click("#submit")
                assert browser.wait_for(f"['done', 'error'].includes({STATE}) && {STATE}") == "done", \
                    browser.js(TEXT.format("error"))
                assert browser.js(TEXT.format("note")).startswith(note), (path.name, browser.js(TEXT.format("note")))
                browser.js("document.body.dataset.state = 'idle'")
            failed = browser.js("[...document.querySelectorAll('#segments tr.failed')]"
                                ".map(r => r.cells[2].textContent)")
            assert failed == ["(failed: RuntimeError: this segment fails)"]
        finally:
            browser.close()


def test_an_upload_cut_short_says_so_beside_the_other_notes(page, tmp_path):
    """verbose_json's `warning` (an upload that decodes only in part) is shown: the page read only no_speech and
    error, so a file cut short looked translated whole; and one note no longer hides another."""
    import numpy as np

    wav = wav_bytes(np.zeros(48000, dtype=np.float32))
    path = tmp_path / "cut.wav"
    path.write_bytes(wav[: len(wav) // 2])  # the header says 3 s, the file holds 1.5 s
    choose(page, "eng", "deu", "srt")
    page.set_files("#file", [str(path)])
    page.click("#submit")
    assert page.wait_for(f"['done', 'error'].includes({STATE}) && {STATE}") == "done", page.js(TEXT.format("error"))
    note = page.js(TEXT.format("note"))
    silent, *cut = note.split("\n")
    assert silent == "No speech was found in this audio." and len(cut) == 1, note
    assert cut[0].startswith("cut.wav: only the first 1.5 s of 3.0 s decode"), note


def test_segment_times_round_before_minutes_and_seconds_are_split(page):
    """The segment table's times: 59.96 s was shown as 0:60.0 (seconds rounded after the minutes were taken)."""
    assert page.js("[0, 5, 59.94, 59.96, 119.97, 3599.96].map(fmtTime)") == [
        "0:00.0", "0:05.0", "0:59.9", "1:00.0", "2:00.0", "60:00.0"]


@pytest.mark.parametrize("trained", ["s2tt", "asr"])
def test_the_page_runs_what_the_model_was_trained_for_unless_told(model_dir, translator, clip, tmp_path, trained):
    """The page sent task=srt whatever it served: a Baseline (S2TT-trained) folder, whose API answers without task
    ran S2TT, still got the SRT prompt from the page (its translation shown as the transcript). Its first choice now
    sends no task (an ASR-stage folder's to the transcription endpoint, as /health's limits.trained_for says:
    translations refuse it), and shows what the task that ran writes."""
    samples, wav = clip
    folder = tiny.trained_folder(model_dir, tmp_path / trained, {trained: 1.0})
    want = translator.translate([samples], "eng", "deu", task=trained, options=DECODING)[0]
    (tmp_path / "clip.wav").write_bytes(wav)
    app = create_app(SpeechTranslator.from_pretrained(folder), ServeOptions(batch=BatchOptions(decoding=DECODING)))
    with live_server(app) as url:
        browser = Browser(CHROMIUM, tmp_path / "profile")
        try:
            browser.goto(url + "/")
            browser.wait_for(f"{STATE} === 'idle' && document.getElementById('tgt').options.length > 10")
            assert browser.js("document.getElementById('task').value") == "auto"
            browser.js("document.getElementById('src').value = 'eng'; document.getElementById('tgt').value = 'deu'")
            browser.set_files("#file", [str(tmp_path / "clip.wav")])
            assert browser.wait_for(f"{TEXT.format('status')}.includes('clip.wav')")
            browser.click("#submit")
            assert browser.wait_for(f"['done', 'error'].includes({STATE}) && {STATE}") == "done", browser.js(
                TEXT.format("error"))
            shown = "translation" if trained == "s2tt" else "transcript"
            assert browser.js(TEXT.format(shown)) == getattr(want, shown)
            hidden = "transcript" if trained == "s2tt" else "translation"  # what the task that ran writes none of
            assert browser.js(f"document.getElementById('{hidden}-box').hidden") is True
        finally:
            browser.close()
