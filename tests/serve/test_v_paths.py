"""What a client is told hides a server path whole: one with spaces in it (quoted or not) and one of a single part,
while URLs, fractions, dates and words with a slash stay as they were."""

import tempfile
from types import SimpleNamespace

import pytest

from llm_srt.paths import CACHE_ENV
from llm_srt.serve import guard

HIDDEN = guard.SERVER_PATH


@pytest.mark.parametrize("text, kept", [
    ("/srv/my models/x.wav: cannot decode audio", f"{HIDDEN}: cannot decode audio"),
    (r"C:\my models\x.wav failed", f"{HIDDEN} failed"),
    ("[Errno 2] No such file or directory: '/srv/My Big Models/x.wav'",
     f"[Errno 2] No such file or directory: '{HIDDEN}'"),
    ('cannot open "/srv/it\'s mine/w.bin" now', f'cannot open "{HIDDEN}" now'),
    ("/x: no such file", f"{HIDDEN}: no such file"),
    ("see ~/models (gone)", f"see {HIDDEN} (gone)"),
])
def test_a_path_with_spaces_or_of_one_part_is_hidden_whole(text, kept):
    """'/srv/my models/x.wav' came out as '<server path> models/x.wav' (the pattern stopped at the space), a quoted
    path with spaces kept all but its first word, and a path of one part (/x) was not hidden."""
    assert guard.hide_paths(text, ()) == kept


@pytest.mark.parametrize("text", [
    "and/or 12/05/2026 3/4 text/plain", "see https://example.org/a/b or eng/deu", "HTTP/1.1 400",
    "the token '\\n' is not text", "'/' alone", "a / b", "3.5 s of audio",
])
def test_ordinary_text_is_kept(text):
    assert guard.hide_paths(text, ()) == text


def test_what_follows_a_path_is_kept_unless_it_continues_the_path():
    assert guard.hide_paths("/srv/a.wav is 1/2 done, see https://x.org/y", ()) == \
        f"{HIDDEN} is 1/2 done, see https://x.org/y"
    assert guard.hide_paths("/a/b /c/d", ()) == f"{HIDDEN} {HIDDEN}"
    paths = ("/srv/my models/m",)  # a model folder the server knows, then a file in it
    assert guard.hide_paths("/srv/my models/m/config.json: bad", paths) == f"{HIDDEN}/config.json: bad"


@pytest.mark.parametrize("text, kept", [
    ("decoded at 3 /s", "decoded at 3 /s"),
    ("12.5 /min, then /x: gone", f"12.5 /min, then {HIDDEN}: gone"),
    ("3 /srv/a: gone", f"3 {HIDDEN}: gone"),
    ("3 /my models/x.wav", f"3 {HIDDEN}"),
    ("a /s", f"a {HIDDEN}"),
])
def test_a_unit_after_a_number_is_no_path(text, kept):
    """A review: a rate such as '3 /s' came out as '3 <server path>' (read as a path of one part); a unit after a
    number stays, while a path of several parts after a number, or a one-part path after a word, is still hidden."""
    assert guard.hide_paths(text, ()) == kept


def test_the_servers_folders_with_spaces_are_hidden_by_their_spelling(tmp_path, monkeypatch):
    """A review: an unquoted path with a space in its last part showed the rest of that part ('/srv/llm srt cache:
    read-only' came out as '<server path> srt cache: read-only', a file in it as '<server path> srt cache/models/x');
    where such a path ends cannot be read from the text, so the server's own folders are hidden by their spelling:
    the cache, the temporary folder and the model's folder reached through a link."""
    cache, temp = "/srv/llm srt cache", "/scratch/my tmp files"
    monkeypatch.setenv(CACHE_ENV, cache)
    monkeypatch.setattr(tempfile, "tempdir", temp)
    target = tmp_path / "big disk" / "run 1"
    target.mkdir(parents=True)
    (tmp_path / "models").symlink_to(target)
    paths = guard.model_paths(SimpleNamespace(name=str(tmp_path / "models"), system=None))
    for text, kept in ((f"{cache}: cannot write there (read-only)", f"{HIDDEN}: cannot write there (read-only)"),
                       (f"{cache}/models/whisper-base is not converted yet", f"{HIDDEN}/models/whisper-base is not "
                        "converted yet"),
                       (f"{temp}/tmpab12.wav: cannot decode it", f"{HIDDEN}/tmpab12.wav: cannot decode it"),
                       (f"{target.resolve()} failed", f"{HIDDEN} failed")):
        assert guard.hide_paths(text, paths) == kept
    monkeypatch.setattr(tempfile, "tempdir", "/tmp")  # one without a space is left to ABSOLUTE_PATH: hidden whole
    assert "/tmp" not in guard.model_paths(SimpleNamespace(name="whisper", system=None))
    assert guard.hide_paths("/tmp/tmpab12.wav: cannot decode it", ()) == f"{HIDDEN}: cannot decode it"


def test_the_home_and_current_folders_with_spaces_are_hidden_by_their_spelling(tmp_path, monkeypatch):
    """'/home/Ann Lee Smith/.cache/x: corrupt' came out as '<server path> Lee Smith/.cache/x: corrupt' (a part of
    several words: the path did not run on over 'Lee'), and the server's current folder likewise: both are known by
    name."""
    home, here = "/home/Ann Lee Smith", tmp_path / "my big app"
    here.mkdir()
    monkeypatch.setenv("HOME", home)
    monkeypatch.chdir(here)
    paths = guard.model_paths(SimpleNamespace(name="whisper", system=None))
    for text, kept in ((f"{home}/.cache/x: corrupt", f"{HIDDEN}/.cache/x: corrupt"),
                       (f"cannot read {here.resolve()}/runs/a b/x.json", f"cannot read {HIDDEN}/runs/a b/x.json")):
        assert guard.hide_paths(text, paths) == kept


def test_a_model_given_as_dot_slash_in_the_root_folder_hides_no_slash(monkeypatch):
    """`--model ./` started in / (a container's usual folder) made '/' a model folder: every '/' of a message became
    SERVER_PATH, and an absolute path came out with its words in plain sight ('<server path>srv/x')."""
    monkeypatch.chdir("/")
    paths = guard.model_paths(SimpleNamespace(name="./", system=None))
    assert "/" not in paths
    assert guard.hide_paths("a / b, and /srv/x failed", paths) == f"a / b, and {HIDDEN} failed"


@pytest.mark.parametrize("path", [r"C:\my models\x.wav", r"\\srv\share\x.wav", r"C:\x"])
def test_an_oserrors_windows_path_with_doubled_backslashes_is_hidden(path):
    """A Python OSError writes its file name as repr does, backslashes doubled ('C:\\\\my models\\\\x.wav'): no
    pattern read that as a path, and a Windows server sent the client the whole of it."""
    message = str(FileNotFoundError(2, "No such file or directory", path))
    assert guard.hide_paths(message, ()) == f"[Errno 2] No such file or directory: '{HIDDEN}'"
    unquoted = message.split("'")[1]
    assert guard.hide_paths(f"{unquoted} failed; the token '\\\\n' stays", ()) == \
        f"{HIDDEN} failed; the token '\\\\n' stays"


def test_a_known_windows_folder_is_hidden_as_an_oserror_writes_it():
    paths = guard.model_paths(SimpleNamespace(name=r"D:\runs\srt final", system=None))
    assert guard.hide_paths(r"cannot open D:\\runs\\srt final: gone", paths) == f"cannot open {HIDDEN}: gone"
