import json
import re
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from llm_srt.data import catalogues, mini, mini_order
from llm_srt.data.manifest import read_manifest
from llm_srt.errors import LLMSRTError

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

GOOD = {  # English -> (German, French)
    "The file could not be opened.": ("Die Datei konnte nicht geöffnet werden.",
                                      "Le fichier n'a pas pu être ouvert."),
    "The connection was closed by the server.": ("Die Verbindung wurde vom Server geschlossen.",
                                                 "La connexion a été fermée par le serveur."),
    "Please try again later.": ("Bitte versuchen Sie es später erneut.", "Veuillez réessayer plus tard."),
    "The password is too short.": ("Das Passwort ist zu kurz.", "Le mot de passe est trop court."),
    "No space is left on the device.": ("Auf dem Gerät ist kein Platz mehr.",
                                        "Il ne reste plus de place sur le périphérique."),
    "The operation was cancelled by the user.": ("Der Vorgang wurde vom Benutzer abgebrochen.",
                                                 "L'opération a été annulée par l'utilisateur."),
    "Unable to read the configuration file.": ("Die Konfigurationsdatei kann nicht gelesen werden.",
                                               "Impossible de lire le fichier de configuration."),
    "The network cannot be reached now.": ("Das Netzwerk ist jetzt nicht erreichbar.",
                                           "Le réseau est injoignable pour le moment."),
}
BAD = {  # English -> (German, French), each failing one rule
    "Could not open %s now.": ("Konnte %s nicht öffnen.", "Impossible d'ouvrir %s."),  # placeholder
    "Enable the PNG loader now.": ("Den PNG-Lader aktivieren.", "Activer le chargeur PNG."),  # acronym
    "_Open the selected file.": ("Die gewählte Datei _öffnen.", "_Ouvrir le fichier choisi."),  # accelerator
    "Save it.": ("Speichern.", "Enregistrer."),  # too few words
    "Show the hidden files": ("Versteckte Dateien anzeigen", "Afficher les fichiers cachés"),  # no full stop
    "Bitte warten Sie hier.": ("Bitte warten Sie hier.", "Veuillez patienter ici."),  # identical to English
    "Visit the site at www.example.org today.": ("Besuchen Sie www.example.org heute.", "Visitez www.example.org."),
}
ONLY_GERMAN = {"The window was closed by the user.": "Das Fenster wurde vom Benutzer geschlossen."}


@pytest.fixture
def locale_dir(tmp_path, mo_file):
    root = tmp_path / "locale"
    items = list({**GOOD, **BAD}.items())
    # two domains; the first sentence is in both, with different translations (the first domain by name wins)
    for lang, col, other in (("de", 0, "Eine andere Datei wurde gefunden."), ("fr", 1, "Un autre fichier existe.")):
        aaa = {en: t[col] for en, t in items[:5]} | (ONLY_GERMAN if lang == "de" else {})
        zzz = {en: t[col] for en, t in items[5:]} | {items[0][0]: other}
        mo_file(root / lang / "LC_MESSAGES" / "aaa.mo", aaa)
        mo_file(root / lang / "LC_MESSAGES" / "zzz.mo", zzz)
    return root


def test_harvest_keeps_sentence_like_entries_present_in_every_language(locale_dir):
    found = catalogues.harvest(["eng", "deu", "fra"], locale_dir)
    assert sorted(s.texts["eng"] for s in found.values()) == sorted(GOOD)
    first = next(s for s in found.values() if s.texts["eng"] == "The file could not be opened.")
    assert first.domain == "aaa" and first.texts["deu"] == GOOD["The file could not be opened."][0]
    assert all(s.id == catalogues.sentence_id(s.texts["eng"]) for s in found.values())
    assert len(catalogues.harvest(["eng", "deu"], locale_dir)) == len(GOOD) + len(ONLY_GERMAN)


@pytest.mark.parametrize("text,lang,ok", [
    ("Die Datei ist leer.", "deu", True), ("文件是空的。", "zho", True), ("ファイルは空です。", "jpn", True),
    ("文件 PNG 是空的。", "zho", False), ("Файл пуст.", "rus", True), ("Файл file пуст.", "rus", False),
    ("Version 2 is out.", "eng", False), ("ไฟล์ว่างเปล่า", "tha", True), ("ไฟล์ว่างเปล่า.", "tha", False),
    ("Line one.\nLine two.", "deu", False), ("Wait for it...", "eng", False), ("open the door now.", "eng", False),
])
def test_sentence_filter(text, lang, ok):
    assert catalogues.sentence_like(text, lang) is ok


def _build(out, locale_dir, **over):
    opts = dict(out=out, langs=("eng", "deu", "fra"), train=4, dev=1, test=1, locale_dir=locale_dir)
    return mini.build_mini(mini.MiniOptions(**{**opts, **over}))


def test_builds_a_small_corpus_deterministically(locale_dir, tmp_path):
    summary = _build(tmp_path / "a", locale_dir)
    assert summary.sentences == {"train": 4, "dev": 1, "test": 1} and len(summary.directions) == 6
    rows = {s: read_manifest(tmp_path / "a" / f"{s}.jsonl") for s in ("train", "dev", "test")}
    for split, n in summary.sentences.items():
        assert len(rows[split]) == n * (3 + 6) == summary.rows[split]  # 3 ASR rows + 6 directions per sentence
    ids = {s: {r.sentence_id for r in rs} for s, rs in rows.items()}
    assert not ids["train"] & ids["test"] and not ids["train"] & ids["dev"] and not ids["dev"] & ids["test"]
    for r in rows["train"]:
        info = sf.info(r.audio)
        assert info.samplerate == 16000 and info.subtype == "PCM_16"
        assert r.duration == pytest.approx(info.duration, abs=1e-3) and r.duration > 0.5
        if not r.is_asr:
            assert r.translation == catalogues.harvest(["eng", r.src_lang, r.tgt_lang], locale_dir)[r.sentence_id] \
                .texts[r.tgt_lang]
    assert sum(summary.hours.values()) * 3600 == pytest.approx(
        sum(r.duration for rs in rows.values() for r in rs if r.is_asr), rel=1e-3)

    _build(tmp_path / "b", locale_dir, workers=1)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 3 * 6 + 5  # audio, 3 manifests, summary.json, voices.jsonl
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_a_missing_catalogue_moves_no_other_sentence_between_splits(locale_dir, tmp_path):
    """The splits were a seeded shuffle of the ids installed: one catalogue more or less reshuffled every split, so a
    machine without PostgreSQL's tested the demo on sentences the shipped models were trained on. Now the sentences
    a machine has keep their order: the smaller build takes the full build's sentences it has, in the same order."""
    fewer = tmp_path / "fewer"
    shutil.copytree(locale_dir, fewer)
    for mo in fewer.glob("*/LC_MESSAGES/zzz.mo"):
        mo.unlink()
    have = set(catalogues.harvest(["eng", "deu", "fra"], fewer))

    def taken(out, split=None):  # sentence ids in the order the build took them: test, then dev, then train
        return [r.sentence_id for s in ([split] if split else ["test", "dev", "train"])
                for r in read_manifest(out / f"{s}.jsonl") if r.is_asr and r.src_lang == "eng"]
    _build(tmp_path / "full", locale_dir, test=2, dev=1, train=4)  # the 7 sentences espeak reads (one German
    _build(tmp_path / "fewer_out", fewer, test=2, dev=1, train=1)  # "Server" is read by an English voice): 4 here
    assert taken(tmp_path / "fewer_out") == [i for i in taken(tmp_path / "full") if i in have]
    assert {i for i in taken(tmp_path / "full", "test") if i in have} <= set(taken(tmp_path / "fewer_out", "test"))


def test_voices_vary_and_seed_changes_the_split(locale_dir, tmp_path):
    jobs = mini._jobs(list(catalogues.harvest(["eng", "deu"], locale_dir).values()), ["eng", "deu"], tmp_path,
                      mini.MiniOptions(out=tmp_path))
    assert len({(j.voice, j.speed, j.pitch) for j in jobs}) > len(jobs) // 2
    a = _build(tmp_path / "a", locale_dir, train=2, seed=0)
    b = _build(tmp_path / "b", locale_dir, train=2, seed=1)
    test_a = {r.sentence_id for r in read_manifest(tmp_path / "a" / "test.jsonl")}
    test_b = {r.sentence_id for r in read_manifest(tmp_path / "b" / "test.jsonl")}
    train_a = {r.sentence_id for r in read_manifest(tmp_path / "a" / "train.jsonl")}
    assert a.sentences == b.sentences and (test_a != test_b or train_a != {
        r.sentence_id for r in read_manifest(tmp_path / "b" / "train.jsonl")})


def test_growing_train_keeps_test_and_dev_and_removes_stale_audio(locale_dir, tmp_path):
    _build(tmp_path / "a", locale_dir, train=5)
    before = {s: (tmp_path / "a" / f"{s}.jsonl").read_text() for s in ("dev", "test")}
    _build(tmp_path / "a", locale_dir, train=2, directions="eng:deu")
    assert {s: (tmp_path / "a" / f"{s}.jsonl").read_text().count("\n") for s in ("dev", "test")} == {"dev": 4,
                                                                                                 "test": 4}
    assert (tmp_path / "a" / "test.jsonl").read_text().splitlines()[0] == before["test"].splitlines()[0]
    assert len(list((tmp_path / "a" / "audio" / "deu").iterdir())) == 2 + 1 + 1


def test_unseen_test_sentences_come_after_train_and_skip_the_listed_ids(locale_dir, tmp_path):
    def ids(folder, split):
        return [r.sentence_id for r in read_manifest(folder / f"{split}.jsonl") if r.is_asr and r.src_lang == "eng"]

    _build(tmp_path / "a", locale_dir, train=2)
    _build(tmp_path / "big", locale_dir, train=3)  # a model trained on it saw one sentence more: the next one
    listed = tmp_path / "train_sentences.txt"
    listed.write_text("\n".join(ids(tmp_path / "big", "train")) + "\n")
    summary = _build(tmp_path / "b", locale_dir, train=2, unseen_test=2, unseen_by=(listed,))
    a, b = tmp_path / "a", tmp_path / "b"
    for split in ("train", "dev"):
        assert (b / f"{split}.jsonl").read_bytes() == (a / f"{split}.jsonl").read_bytes()
    old_test, test = ids(a, "test"), ids(b, "test")
    assert test[:len(old_test)] == old_test and len(test) == len(old_test) + 2 == summary.sentences["test"]
    assert (b / "test.jsonl").read_text().startswith((a / "test.jsonl").read_text())  # old rows first, unchanged
    unseen = set(test[len(old_test):])
    assert not unseen & set(ids(tmp_path / "big", "train")) and not unseen & set(ids(b, "train") + ids(b, "dev"))
    skipped = set(ids(tmp_path / "big", "train")) - set(ids(b, "train"))
    assert len(skipped) == 1 and not any((b / "audio" / "eng").glob(f"{next(iter(skipped))}.*"))
    assert json.loads((b / "summary.json").read_text())["unseen_test"] == summary.unseen_test == 2
    assert "unseen_test" not in json.loads((a / "summary.json").read_text())
    assert "2 of the test sentences taken after train" in summary.lines()[1]
    with pytest.raises(LLMSRTError, match="only 6 sentences could be read .*; 3 sentences listed by --unseen-by, or "
                                          r"reading like one, not taken as unseen\); build a smaller corpus"):
        _build(tmp_path / "c", locale_dir, train=2, unseen_test=4, unseen_by=(listed,))
    with pytest.raises(LLMSRTError, match="--unseen-by only chooses the --unseen-test sentences"):
        _build(tmp_path / "c", locale_dir, unseen_by=(listed,))
    with pytest.raises(LLMSRTError, match=r"--unseen-by .*missing.txt: cannot read it \(No such file"):
        _build(tmp_path / "c", locale_dir, unseen_test=1, unseen_by=(tmp_path / "missing.txt",))


def test_asking_for_more_sentences_than_exist_is_a_clear_error(locale_dir, tmp_path):
    """The advice works for `make demo` too, which has no size flags: a smaller corpus built first, given by --data
    (test_demo checks that the demo uses it as it is)."""
    with pytest.raises(LLMSRTError, match="only 8 sentences are translated") as raised:
        _build(tmp_path / "a", locale_dir, train=20)
    assert "and 22 are asked for; build a smaller corpus: `llm-srt prepare mini --out DIR` with a smaller " \
           "--train, --dev, --test, --unseen-test or --prose, or fewer --langs" in str(raised.value)
    assert "`llm-srt demo --data DIR` uses it as it is (make demo reads data/mini)" in str(raised.value)
    with pytest.raises(LLMSRTError, match="not among the languages"):
        _build(tmp_path / "a", locale_dir, directions="eng:spa")


def test_speech_checks_reject_foreign_words_and_implausible_durations(tmp_path):
    def job(text, lang, voice, letters):
        return mini._Job("x", lang, text, letters, mini.voices.Voice("espeak-ng", voice), 160, 50,
                         str(tmp_path / f"{lang}.flac"), "FLAC")

    reason, _ = mini._speak(job("Используйте DROP для удаления.", "rus", "ru", 24))
    assert "switched voice" in reason
    assert mini._speak(job("Die Datei ist leer und wird nun gelöscht.", "deu", "de", 3))[0] == "too long for its text"
    assert mini._speak(job("Leer.", "deu", "de", 300))[0] == "too short for its text"
    reason, seconds = mini._speak(job("Die Datei ist leer.", "deu", "de", 15))
    assert reason == "" and seconds > 0.5 and sf.info(str(tmp_path / "deu.flac")).samplerate == 16000


@pytest.mark.skipif(not (catalogues.LOCALE_DIR / "de" / "LC_MESSAGES").is_dir() or shutil.which("mecab") is None,
                    reason="this machine has no German gettext catalogues or no mecab")
def test_real_catalogues_with_japanese_kana(tmp_path):
    counts = catalogues.survey(langs=["deu", "jpn"])
    assert counts["deu"] > 50
    if counts["jpn"] < 20:
        pytest.skip("too few Japanese catalogues here")
    summary = mini.build_mini(mini.MiniOptions(out=tmp_path, langs=("eng", "deu", "jpn"), train=4, dev=1, test=1))
    assert summary.sentences == {"train": 4, "dev": 1, "test": 1}
    rows = read_manifest(tmp_path / "train.jsonl")
    jpn = [r for r in rows if r.src_lang == "jpn" and r.is_asr]
    assert len(jpn) == 4 and all(r.duration > 0.5 for r in jpn)
    assert json.loads((tmp_path / "summary.json").read_text())["langs"] == ["eng", "deu", "jpn"]


@pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed (Debian package flite)")
def test_several_synthesizers_augmentation_prose_and_a_heldout_voice(locale_dir, tmp_path, monkeypatch):
    docs = tmp_path / "doc" / "pkg"
    docs.mkdir(parents=True)
    (docs / "README").write_text("This program keeps a list of your books.\n\nIt runs on most machines today. "
                                 "The file could not be opened. Each entry holds a title and an author.\n")
    monkeypatch.setattr(mini.prose, "DOC_DIR", tmp_path / "doc")
    monkeypatch.setattr(mini.prose, "STDLIB", tmp_path / "nothing")
    opts = dict(synthesizers=("espeak-ng", "flite"), heldout_voice="flite:slt", prose=2,
                augmentation=mini.voices.Augmentation(p=1.0))
    summary = _build(tmp_path / "a", locale_dir, **opts)
    out = tmp_path / "a"
    spoken = {json.loads(line)["audio"]: json.loads(line) for line in (out / "voices.jsonl").read_text().splitlines()}
    rows = {s: read_manifest(out / f"{s}.jsonl") for s in ("train", "dev", "test", "prose", "heldout")}
    assert summary.extra == {"prose": 2, "heldout": 3}  # the test sentence in English: ASR + eng->deu, eng->fra
    for split, rs in rows.items():
        for r in rs:
            line = spoken[str(Path(r.audio).relative_to(out))]
            assert r.duration == pytest.approx(sf.info(r.audio).duration, abs=1e-3)
            assert ("augment" in line) == (split in ("train", "prose")), (split, line)
            assert (line["voice"] == "flite:slt") == (split == "heldout"), (split, line)
            assert line["voice"].startswith("espeak-ng:") or r.src_lang == "eng"
    assert {r.src_lang for r in rows["heldout"]} == {"eng"} and all("/heldout/" in r.audio for r in rows["heldout"])
    assert {r.sentence_id for r in rows["heldout"]} == {r.sentence_id for r in rows["test"]}
    english = [spoken[k]["voice"] for k in spoken if k.startswith("audio/eng/")]
    assert any(v.startswith("flite:") for v in english) and any(v.startswith("espeak-ng:") for v in english)
    assert all(r.is_asr and r.source == "prose:doc:pkg/README" for r in rows["prose"])
    assert {r.transcript for r in rows["prose"]} < {"This program keeps a list of your books.",
                                                    "It runs on most machines today.",
                                                    "Each entry holds a title and an author."}  # gettext one out
    summary_json = json.loads((out / "summary.json").read_text())
    assert summary_json["extra"] == summary.extra and "flite:slt" in summary_json["voices"]

    _build(tmp_path / "b", locale_dir, workers=1, **opts)  # the same options give the same bytes
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out)
        if rel.suffix == ".jsonl" and rel.name != "voices.jsonl":  # manifests hold absolute audio paths
            assert path.read_text().replace(str(out), "") == (tmp_path / "b" / rel).read_text().replace(
                str(tmp_path / "b"), ""), rel
        else:
            assert path.read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel

    _build(out, locale_dir)  # the default options again: no prose, no held-out voice left behind
    assert not (out / "prose.jsonl").exists() and not (out / "heldout.jsonl").exists()
    assert not (out / "heldout").exists()
    assert {json.loads(line)["voice"].split(":")[0] for line in (out / "voices.jsonl").read_text().splitlines()} \
        == {"espeak-ng"}


def test_voice_options_are_checked(locale_dir, tmp_path):
    with pytest.raises(LLMSRTError, match="unknown synthesizer 'say'"):
        _build(tmp_path / "a", locale_dir, synthesizers=("espeak-ng", "say"))
    with pytest.raises(LLMSRTError, match="no voice of --synthesizers flite speaks deu"):
        _build(tmp_path / "a", locale_dir, synthesizers=("flite",))
    with pytest.raises(LLMSRTError, match="snr_db 30.0-5.0"):
        _build(tmp_path / "a", locale_dir, augmentation=mini.voices.Augmentation(snr_db=(30.0, 5.0)))


def test_voice_flags_give_the_options():
    import argparse

    parser = argparse.ArgumentParser()
    mini.add_voice_arguments(parser)
    default = mini.voice_options(parser.parse_args([]))
    assert default == dict(synthesizers=("espeak-ng",), augmentation=None, prose=0, heldout_voice="")
    given = mini.voice_options(parser.parse_args(["--synthesizers", "espeak-ng,flite", "--augment",
                                                  "--augment-snr=-5,10", "--prose", "300", "--heldout-voice",
                                                  "flite:rms"]))
    assert given == dict(synthesizers=("espeak-ng", "flite"), augmentation=mini.voices.Augmentation(
        snr_db=(-5.0, 10.0)), prose=300, heldout_voice="flite:rms")
    with pytest.raises(LLMSRTError, match="--augment-rt60 '0.5': expected LOW,HIGH"):
        mini.voice_options(parser.parse_args(["--augment-rt60", "0.5"]))


def test_held_out_sentences_that_read_like_train_ones_are_counted():
    """Splits go by the English message id: "you've" and "you\u2019ve" are two messages with one German translation,
    and can fall on either side, so the same speech and text sit in train and test. The build says how many."""
    from llm_srt.data.catalogues import Sentence, twins_of_train
    from llm_srt.data.mini import MiniSummary

    def sentence(i, eng, deu):
        return Sentence(f"s{i}", "d", {"eng": eng, "deu": deu})

    chosen = {"train": [sentence(1, "The color you've chosen.", "Die von Ihnen gewählte Farbe."),
                        sentence(2, "Passwords differ.", "Die Passwörter stimmen nicht überein.")],
              "dev": [sentence(3, "Open a file.", "Eine Datei öffnen.")],
              "test": [sentence(4, "The color you\u2019ve chosen.", "Die von Ihnen gewählte Farbe."),
                       sentence(5, "The passwords do not match.", "Die Passwörter stimmen nicht überein!"),
                       sentence(6, "Close the window.", "Das Fenster schließen.")]}
    twins = twins_of_train(chosen, ["eng", "deu"])
    assert twins == {"dev": [], "test": ["s4", "s5"]}  # an apostrophe's shape; one translation of two messages
    summary = MiniSummary(out="o", langs=["eng", "deu"], directions=[], sentences={}, rows={}, hours={},
                          twins_of_train=twins)
    assert any(line.startswith("warning: 2 test sentences read like train sentences") for line in summary.lines())


JAPANESE = {"The file could not be opened.": "ファイルを開けませんでした。",
            "The connection was closed by the server.": "接続はサーバーによって閉じられました。",
            "Please try again later.": "後でもう一度お試しください。",
            "The password is too short.": "パスワードが短すぎます。"}


@pytest.mark.skipif(shutil.which("mecab") is None, reason="mecab is not installed")
def test_heldout_voice_reads_japanese_from_kana(tmp_path, mo_file):
    """espeak-ng's Japanese voice reads kanji as "(en) Japanese letter": read from kanji, every held-out utterance
    failed the voice-switch check and heldout.jsonl had no Japanese row. It reads the kana the splits are read from."""
    mo_file(tmp_path / "locale" / "ja" / "LC_MESSAGES" / "aaa.mo", JAPANESE)
    summary = _build(tmp_path / "a", tmp_path / "locale", langs=("eng", "jpn"), train=1, dev=1, test=2,
                     heldout_voice="espeak-ng:ja+f1")
    assert not [k for k in summary.rejected if k.startswith("heldout")], summary.rejected
    rows = read_manifest(tmp_path / "a" / "heldout.jsonl")
    assert summary.extra["heldout"] == len(rows) == 2 * 2  # two test sentences: ASR + jpn->eng each
    assert {r.src_lang for r in rows} == {"jpn"} and {r.transcript for r in rows} <= set(JAPANESE.values())
    assert all(r.duration > 0.5 for r in rows)


def _one_prose_sentence(monkeypatch):
    """prose.harvest stubbed to one English sentence espeak reads (the real one reads all installed docs)."""
    monkeypatch.setattr(mini.prose, "harvest", lambda exclude=frozenset(), **_: [
        ("The quick fox jumps over the lazy dog.", "doc:fox")])


def test_prose_without_english_is_refused_before_any_speech(locale_dir, tmp_path, monkeypatch):
    """Prose is English ASR rows; without eng in --langs the build read every sentence and then failed with
    KeyError 'eng'. It is now refused up front, with what to do."""
    _one_prose_sentence(monkeypatch)
    with pytest.raises(LLMSRTError, match="--langs deu,fra has no English; add eng to --langs, or leave --prose"):
        _build(tmp_path / "a", locale_dir, langs=("deu", "fra"), prose=1)
    assert not (tmp_path / "a").exists()  # nothing synthesized


def test_prose_hours_are_counted_apart_from_the_corpus(locale_dir, tmp_path, monkeypatch):
    """`hours` is the speech of train/dev/test (the manifests' ASR rows); prose.jsonl's is its own entry (it was
    added to eng's)."""
    _one_prose_sentence(monkeypatch)
    summary = _build(tmp_path / "a", locale_dir, langs=("eng", "deu"), train=2, prose=1)
    out = tmp_path / "a"
    corpus = [r for s in ("train", "dev", "test") for r in read_manifest(out / f"{s}.jsonl") if r.is_asr]
    for lang in ("eng", "deu"):
        assert summary.hours[lang] * 3600 == pytest.approx(sum(r.duration for r in corpus if r.src_lang == lang),
                                                           rel=1e-3)
    prose_rows = read_manifest(out / "prose.jsonl")
    assert len(prose_rows) == 1 and prose_rows[0].duration > 1.0
    assert summary.extra_hours == {"prose": pytest.approx(prose_rows[0].duration / 3600, rel=1e-3)}
    assert json.loads((out / "summary.json").read_text())["extra_hours"] == summary.extra_hours
    assert f"prose.jsonl: 1 rows, {summary.extra_hours['prose']:.3f} hours of speech" in summary.lines()
    assert (out / "audio" / "eng" / Path(prose_rows[0].audio).name).is_file()  # not taken for stale audio



TWINS = {  # two English messages, one German translation (as PackageKit's "updates" and "upgrades" in Russian)
    "There are no updates available now.": ("Derzeit sind keine Aktualisierungen verfügbar.",
                                            "Aucune mise à jour n'est disponible."),
    "There are no upgrades available now.": ("Derzeit sind keine Aktualisierungen verfügbar.",
                                             "Aucune mise à niveau n'est disponible."),
}
PROSE_TWIN = "There are no updates, available now."  # reads like the first in English (a prose sentence's id)


def test_unseen_test_sentences_skip_those_that_read_like_a_listed_one(tmp_path, mo_file, monkeypatch):
    """--unseen-by filtered by sentence id only: a sentence whose German is a listed (trained-on) sentence's German
    was taken as unseen. The listed files hold ids only; the texts come from the catalogues, and from the installed
    prose for ids the catalogues lack (those neither has are counted and said)."""
    root = tmp_path / "locale"
    for lang, col in (("de", 0), ("fr", 1)):
        mo_file(root / lang / "LC_MESSAGES" / "aaa.mo", {en: t[col] for en, t in {**GOOD, **TWINS}.items()
                                                         if "server" not in en})  # German "Server": an English voice
    monkeypatch.setattr(mini.prose, "harvest", lambda exclude=frozenset(), **_: [(PROSE_TWIN, "doc:twin")])
    found = catalogues.harvest(["eng", "deu", "fra"], root)
    updates, upgrades = (catalogues.sentence_id(en) for en in TWINS)

    def order(seed):
        return mini_order.sentence_order(found, seed)
    seed = next(seed for seed in range(100) if 3 <= order(seed).index(updates) < order(seed).index(upgrades))
    ids = order(seed)
    for name, listed, twin in (("gettext", [updates, "ffffffffff"], upgrades),  # and an id of nothing here
                               ("prose", [mini.prose.sentence_id(PROSE_TWIN)], updates)):
        (tmp_path / f"{name}.txt").write_text("\n".join(listed) + "\n")
        summary = _build(tmp_path / name, root, train=ids.index(twin) - 2, seed=seed, unseen_test=1,
                         unseen_by=(tmp_path / f"{name}.txt",))
        assert summary.rejected_sentences == 0
        test = [r.sentence_id for r in read_manifest(tmp_path / name / "test.jsonl")
                if r.is_asr and r.src_lang == "eng"]
        assert len(test) == 2 and twin not in test  # it was the next sentence after train: the one after it instead
        assert test[1] == next(i for i in ids[ids.index(twin) + 1:] if i not in listed), name
        written = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary.unseen_by_unknown == written.get("unseen_by_unknown", 0) == (name == "gettext")
        assert any(line.startswith("warning: 1 ids listed by --unseen-by are no sentence of these catalogues or "
                                   "of the installed prose") for line in summary.lines()) == (name == "gettext")


def test_a_mistyped_heldout_voice_is_refused_before_any_speech(locale_dir, tmp_path, monkeypatch):
    """A --heldout-voice that names no voice took nothing out of the pool, so it passed the early checks: every
    utterance was read and train/dev/test.jsonl replaced before `_heldout` said so, and an earlier corpus was left
    with new manifests beside its old summary.json and voices.jsonl. It is refused before anything is read."""
    def read(*_, **__):
        raise AssertionError("speech was synthesized before the held-out voice was checked")
    monkeypatch.setattr(mini, "_synthesize_until_full", read)
    specs = ["espeak-ng:en+m9", "espeak-ng:ja+f1"]  # no such variant; a voice of no language of --langs
    specs += ["flite:rsm"] if shutil.which("flite") else []  # rms mistyped
    for spec in specs:
        with pytest.raises(LLMSRTError, match=re.escape(f"--heldout-voice {spec}: no such voice speaks any of eng, "
                                                        "deu, fra here (voices: espeak-ng:")):
            _build(tmp_path / "a", locale_dir, heldout_voice=spec)
        assert not (tmp_path / "a").exists()


def test_catalogue_text_is_nfc_and_a_broken_catalogue_is_skipped(tmp_path, mo_file):
    """A few catalogues write accents decomposed (9 Spanish texts here): espeak-ng read them without their stress
    and a model would learn decomposed targets. A header's charset=CHARSET (left unfilled) or a .mo cut short was a
    traceback naming no file, which stopped the whole build."""
    import unicodedata

    root = tmp_path / "locale"
    english, german = next(iter(GOOD.items()))[0], GOOD["The file could not be opened."][0]
    decomposed = unicodedata.normalize("NFD", german)
    assert decomposed != german
    mo_file(root / "de" / "LC_MESSAGES" / "aaa.mo", {english: decomposed})
    mo_file(root / "de" / "LC_MESSAGES" / "bbb.mo", {"": "Content-Type: text/plain; charset=CHARSET\n",
                                                      "Please try again later.": GOOD["Please try again later."][0]})
    cut = mo_file(root / "de" / "LC_MESSAGES" / "ccc.mo", {"The password is too short.": "Das Passwort ist kurz."})
    cut.write_bytes(cut.read_bytes()[:40])
    found = catalogues.harvest(["eng", "deu"], root)
    assert [s.texts["deu"] for s in found.values()] == [german]


def test_a_missing_mecab_is_said_before_the_last_builds_manifests_go(locale_dir, tmp_path, monkeypatch):
    """Japanese needs mecab: its check ran after the earlier build's manifests, summary and voices.jsonl were
    removed, so the error left a folder of audio alone."""
    out = tmp_path / "a"
    _build(out, locale_dir)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda tool, *a, **k: None if tool == "mecab" else which(tool, *a, **k))
    with pytest.raises(LLMSRTError, match="^mecab not installed"):
        _build(out, locale_dir, langs=("eng", "deu", "jpn"))
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_a_language_espeak_ng_has_no_voice_for_is_said_before_any_speech(locale_dir, tmp_path, monkeypatch):
    """An espeak-ng without a language's voice failed every utterance of it: the earlier build's manifests were
    removed, every sentence read, and the build ended in "only 0 sentences could be read ... build a smaller
    corpus". The voice is tried first, and the error names the language and the voice."""
    import dataclasses

    from llm_srt import languages

    out = tmp_path / "a"
    _build(out, locale_dir)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    monkeypatch.setitem(languages.LANGUAGES, "deu", dataclasses.replace(languages.get("deu"), espeak="xq"))

    def read(*_, **__):
        raise AssertionError("speech was synthesized before the voices were tried")
    monkeypatch.setattr(mini, "_synthesize_until_full", read)
    with pytest.raises(LLMSRTError, match=r"^deu: this espeak-ng has no voice 'xq' to read it \(.+\); install "
                                          r"espeak-ng with its data \(make setup\), or leave deu out of --langs$"):
        _build(out, locale_dir)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def _consistent(out: Path) -> dict:
    """summary.json of `out`, checked against its manifests and voices.jsonl."""
    summary = json.loads((out / "summary.json").read_text())
    audio = set()
    for split, n in (summary["rows"] | summary.get("extra", {})).items():
        rows = read_manifest(out / f"{split}.jsonl")
        assert len(rows) == n, split
        audio |= {str(Path(r.audio).relative_to(out)) for r in rows}
    assert {json.loads(line)["audio"] for line in (out / "voices.jsonl").read_text().splitlines()} == audio
    return summary


def test_a_build_that_stops_part_way_leaves_no_manifest_or_summary_of_another_build(locale_dir, tmp_path,
                                                                                    monkeypatch):
    """Manifests were replaced before prose and the held-out voice were read, and summary.json and voices.jsonl
    written last, so a build that failed late (too few prose sentences, a write error) left new manifests beside the
    earlier build's summary and voice records; one that failed while reading had already overwritten, or deleted,
    audio the earlier manifests name. A build now removes the earlier build's manifests and records before it reads
    (its options checked first), and writes summary.json last: what a stopped build leaves is visibly unfinished."""
    out = tmp_path / "a"
    assert _build(out, locale_dir, langs=("eng", "deu"), train=3).sentences["train"] == 3
    _one_prose_sentence(monkeypatch)
    with pytest.raises(LLMSRTError, match="could be read in all of eng"):
        _build(out, locale_dir, langs=("eng", "deu"), train=2, prose=2)  # one prose sentence exists, two asked for
    assert not [name for name in ("train.jsonl", "dev.jsonl", "test.jsonl", "voices.jsonl", "summary.json")
                if (out / name).exists()]

    def disk_full(*_):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(mini, "_write_voices", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _build(out, locale_dir, langs=("eng", "deu"), train=4)
    assert not (out / "summary.json").exists() and (out / "train.jsonl").exists()
    monkeypatch.undo()
    _build(out, locale_dir, langs=("eng", "deu"), train=2, heldout_voice="espeak-ng:en-us+f4")
    assert _consistent(out)["extra"] == {"heldout": 2}
    with pytest.raises(LLMSRTError, match="--heldout-voice espeak-ng:en-us[+]f9: no such voice"):
        _build(out, locale_dir, langs=("eng", "deu"), train=3, heldout_voice="espeak-ng:en-us+f9")
    assert _consistent(out)["sentences"]["train"] == 2  # refused before anything was touched


def test_a_heldout_voice_keeps_its_speaker_out_of_training_under_another_synthesizer(tmp_path, monkeypatch):
    """flite:slt held out left festival:cmu_us_slt_arctic_hts (the same speaker, CMU ARCTIC SLT) in the pool, so
    the held-out score was of a speaker heard in training. Now no utterance of any split is drawn with either."""
    monkeypatch.setattr(mini.voices.SYNTHESIZERS["festival"], "voices",
                        lambda lang: mini.voices.FESTIVAL_VOICES if lang == "eng" else ())  # as if installed
    chunk = [catalogues.Sentence(f"{i:010x}", "d", {"eng": "The file could not be opened.", "deu": "Die Datei."})
             for i in range(80)]
    opts = mini.MiniOptions(out=tmp_path, synthesizers=("espeak-ng", "flite", "festival"), heldout_voice="flite:slt")
    drawn = {str(j.voice) for j in mini._jobs(chunk, ["eng", "deu"], tmp_path, opts)}
    assert {"flite:slt", "festival:cmu_us_slt_arctic_hts"}.isdisjoint(drawn)
    assert {"flite:kal16", "festival:kal_diphone", "festival:ked_diphone"} <= drawn  # the other voices still are
    summary = mini.MiniSummary(out="o", langs=["eng"], directions=[], sentences={}, rows={}, hours={},
                               heldout_twins=["festival:cmu_us_slt_arctic_hts"])
    assert ("also left out of every split, the held-out voice's speaker: festival:cmu_us_slt_arctic_hts "
            "(heldout.jsonl is read by the named voice alone)") in summary.lines()


@pytest.mark.skipif(shutil.which("flite") is None or shutil.which("text2wave") is None
                    or "cmu_us_slt_arctic_hts" not in mini.voices.Festival().voices("eng"),
                    reason="flite and festival's SLT voice are not installed (Debian flite, festvox-us-slt-hts)")
def test_a_heldout_flite_voice_and_its_festival_twin_in_a_build(locale_dir, tmp_path):
    """The summary names the voice left out with the held-out one, and no split is read by it."""
    out = tmp_path / "a"
    summary = _build(out, locale_dir, langs=("eng", "deu"), train=2, synthesizers=("espeak-ng", "festival"),
                     heldout_voice="flite:slt")
    assert summary.heldout_twins == ["festival:cmu_us_slt_arctic_hts"]
    assert json.loads((out / "summary.json").read_text())["heldout_twins"] == summary.heldout_twins
    spoken = [json.loads(line) for line in (out / "voices.jsonl").read_text().splitlines()]
    assert {r["voice"] for r in spoken if r["audio"].startswith("heldout/")} == {"flite:slt"}
    assert not {r["voice"] for r in spoken} & {"festival:cmu_us_slt_arctic_hts"}
    assert _consistent(out)["extra"] == {"heldout": 2}  # the test sentence in English: ASR + eng->deu


def test_the_rejected_line_says_why_its_counts_add_up_to_more_than_the_sentences():
    """`rejected 44 sentences: deu: ... x18, fra: ... x27` read as a miscount: a sentence rejected in two languages
    counts in each."""
    from llm_srt.data.mini import MiniSummary

    def line(rejected: dict, sentences: int) -> str:
        summary = MiniSummary("out", ["deu", "fra"], [], {}, {}, {}, rejected=rejected, rejected_sentences=sentences)
        return next(x for x in summary.lines() if x.startswith("rejected"))

    assert line({"deu: no speech": 18, "fra: no speech": 27}, 44).endswith(
        "fra: no speech x27 (a sentence rejected in several languages counts in each)")
    assert line({"deu: no speech": 18, "fra: no speech": 27}, 45).endswith("fra: no speech x27")
    assert line({"deu: too fast": 3, "prose eng: too fast": 2}, 3).endswith("prose eng: too fast x2")  # not of these


def test_unseen_by_files_saved_with_a_byte_order_mark_or_crlf_give_the_same_ids(tmp_path):
    """A train_sentences.txt saved by a Windows editor starts with a byte order mark: its first id was read as
    '\\ufeff' + id, matched no sentence, and that sentence (trained on) could be taken as an unseen test one."""
    plain, windows = tmp_path / "plain.txt", tmp_path / "windows.txt"
    plain.write_text("0123456789\nabcdefabcd\n", encoding="utf-8")
    windows.write_bytes(b"\xef\xbb\xbf0123456789\r\nabcdefabcd\r\n")
    assert mini._listed_ids((windows,)) == mini._listed_ids((plain,)) == {"0123456789", "abcdefabcd"}


def test_another_corpus_manifests_in_out_are_moved_aside_not_deleted(locale_dir, tmp_path):
    """A build deleted whatever train/dev/test.jsonl and summary.json OUT held, a FLEURS conversion's too when --out
    pointed at its folder (hours of converting lost); they are moved aside to NAME.stale, as the converters do, and
    the printed summary says so. An earlier mini build's are still just replaced."""
    out = tmp_path / "a"
    out.mkdir()
    fleurs = {name: json.dumps({"id": f"fleurs:{name}", "corpus": "fleurs"}) + "\n"
              for name in ("train.jsonl", "test.jsonl")}
    fleurs["summary.json"] = json.dumps({"written": {"train": 1, "test": 1}}) + "\n"
    for name, text in fleurs.items():
        (out / name).write_text(text)
    summary = _build(out, locale_dir, langs=("eng", "deu"), train=2)
    for name, text in fleurs.items():
        assert (out / (name + ".stale")).read_text() == text, name
    assert summary.moved_aside == {name: name + ".stale" for name in ("train.jsonl", "test.jsonl", "summary.json")}
    assert ("moved another corpus's files aside: train.jsonl to train.jsonl.stale, test.jsonl to test.jsonl.stale, "
            "summary.json to summary.json.stale (rename them back, or keep corpora in separate --out folders)"
            ) in summary.lines()
    assert _consistent(out)["moved_aside"] == summary.moved_aside
    (out / "train.jsonl.stale").unlink()
    again = _build(out, locale_dir, langs=("eng", "deu"), train=2)  # its own last build's: replaced, nothing aside
    assert again.moved_aside == {} and not (out / "train.jsonl.stale").exists()
    assert "moved_aside" not in _consistent(out) and not any("another corpus" in line for line in again.lines())


def test_a_file_moved_aside_onto_an_earlier_stale_one_keeps_both(locale_dir, tmp_path):
    """Another corpus's train.jsonl was moved onto NAME.stale, replacing the one an earlier build had moved aside
    there (a third corpus into one --out lost the first one's manifests); it goes to the first free of NAME.stale,
    NAME.stale.1, ..., as the converters' do, and the line names where each went."""
    out = tmp_path / "a"
    out.mkdir()
    first, second = ({"id": f"{corpus}:1", "corpus": corpus} for corpus in ("fleurs", "covost2"))
    (out / "train.jsonl.stale").write_text(json.dumps(first) + "\n")
    (out / "train.jsonl").write_text(json.dumps(second) + "\n")
    summary = _build(out, locale_dir, langs=("eng", "deu"), train=2)
    assert json.loads((out / "train.jsonl.stale").read_text()) == first
    assert json.loads((out / "train.jsonl.stale.1").read_text()) == second
    assert summary.moved_aside == {"train.jsonl": "train.jsonl.stale.1"}
    assert ("moved another corpus's files aside: train.jsonl to train.jsonl.stale.1 (rename them back, or keep "
            "corpora in separate --out folders)") in summary.lines()
