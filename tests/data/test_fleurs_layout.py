"""FLEURS folders laid out other than the converter needs (a partial download, the hub's layout, audio still packed):
each stops the run with one line saying what to do."""

import re
import shutil
import subprocess
import tarfile

import pytest

from llm_srt import cli, languages
from llm_srt.data.fleurs import prepare_fleurs
from llm_srt.data.manifest import read_manifest
from llm_srt.errors import LLMSRTError

LOCALES = {"en_us": "eng", "de_de": "deu", "fr_fr": "fra"}  # 3 of the 15 locales, as a partial download holds


@pytest.fixture
def partial_root(tmp_path, audio_file, layouts):
    """ROOT/<locale>/{train,dev,test}.tsv and audio/<split>/ for 3 locales, one sentence per split."""
    root = tmp_path / "fleurs"
    for locale, code in LOCALES.items():
        for sid, split in enumerate(("train", "dev", "test"), start=1):
            name = f"{code}{sid}.wav"
            audio_file(root / locale / "audio" / split / name, seconds=0.3)
            layouts.write_fleurs_table(root / locale / f"{split}.tsv", [(str(sid), name, f"{code} {sid}.", 4800)])
    return root


def test_langs_all_on_a_partial_download_names_the_missing_folders_and_the_langs_to_give(partial_root, tmp_path,
                                                                                        capsys):
    """`--langs all` with 3 locale folders said "ROOT/id_id/train.tsv: missing" (a table, though the folder was
    absent): one of 12 missing locales per run, and nothing about the languages that were there."""
    every = languages.parse_list("all")
    assert cli.main(["prepare", "fleurs", "--root", str(partial_root), "--langs", "all", "--out",
                     str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    missing = len(every) - len(LOCALES)
    m = re.fullmatch(rf"llm-srt prepare: error: {re.escape(str(partial_root))}: {missing} of the {len(every)} locale "
                     rf"folders --langs names are missing \(([a-z_]+/), ([a-z_]+/), ([a-z_]+/) and {missing - 3} "
                     r"more\); it holds those of (\S+), (\S+), (\S+): give --langs (\S+) to prepare those\n", err)
    assert m, err
    assert not any((partial_root / folder).exists() for folder in m.groups()[:3])
    assert all(languages.get(code).fleurs + "/" not in m.groups()[:3] for code in LOCALES.values())
    assert set(m.groups()[3:6]) == set(LOCALES.values())
    prepare_fleurs(partial_root, languages.parse_list(m.group(7)), tmp_path / "out")  # the advice works
    assert {r.src_lang for r in read_manifest(tmp_path / "out" / "train.jsonl")} == set(LOCALES.values())


def test_langs_naming_some_held_locales_and_a_missing_one_suggests_the_held_ones_asked_for(partial_root, tmp_path):
    ind = languages.get("ind").fleurs
    with pytest.raises(LLMSRTError) as e:
        prepare_fleurs(partial_root, ["eng", "ind", "deu"], tmp_path / "out")
    assert str(e.value) == (f"{partial_root}: 1 of the 3 locale folders --langs names are missing ({ind}/); it holds "
                            "those of deu, eng, fra: give --langs eng,deu to prepare the ones asked for that it holds")
    with pytest.raises(LLMSRTError, match=r"^\S+: 1 of the 1 locale folders --langs names are missing \(en_us/\); "
                                          r"there is no such folder: give the FLEURS folder as --root$"):
        prepare_fleurs(tmp_path / "nowhere", ["eng"], tmp_path / "out")


def test_the_hub_s_layout_with_langs_says_to_give_root_data(partial_root, tmp_path):
    """ROOT/data/<locale>/ (the dataset hub's layout): "give ROOT/data" came only without --langs; `--langs
    eng,deu,fra` said ROOT/en_us/train.tsv was missing."""
    hub = tmp_path / "hub"
    hub.mkdir()
    partial_root.rename(hub / "data")
    with pytest.raises(LLMSRTError) as e:
        prepare_fleurs(hub, ["eng", "deu", "fra"], tmp_path / "out")
    assert str(e.value) == (f"{hub}: 3 of the 3 locale folders --langs names are missing (en_us/, de_de/, fr_fr/); it "
                            "holds no FLEURS locale folder (e.g. en_us/, with train.tsv and audio/); this looks like "
                            f"the dataset's root: give {hub / 'data'}")
    assert prepare_fleurs(hub / "data", ["eng", "deu", "fra"], tmp_path / "out").written["test"] > 0


def test_every_split_still_packed_is_named_at_once_with_one_command_that_unpacks_them_all(partial_root, tmp_path):
    """One archive was named a run: 15 languages' 3 splits took up to 45 runs. The command unpacks the 4 archives
    as the hub ships them (members <split>/<file name>), and leaves alone the splits unpacked or without one."""
    for locale, split in (("en_us", "train"), ("en_us", "dev"), ("de_de", "train"), ("fr_fr", "dev")):
        audio = partial_root / locale / "audio"
        with tarfile.open(audio / f"{split}.tar.gz", "w:gz") as tar:
            tar.add(audio / split, arcname=split)
        shutil.rmtree(audio / split)
    with pytest.raises(LLMSRTError) as e:
        prepare_fleurs(partial_root, None, tmp_path / "out")
    head, command = str(e.value).split("; extract them all first: ")
    assert head == (f"{partial_root}: the wavs of 4 splits are still in their .tar.gz archives (de_de/audio/"
                    "train.tar.gz, en_us/audio/train.tar.gz, en_us/audio/dev.tar.gz and 1 more)")
    assert "\n" not in command
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    assert done.stderr == ""
    assert all((partial_root / locale / "audio" / split).is_dir() for locale in LOCALES for split in ("train", "dev"))
    assert prepare_fleurs(partial_root, None, tmp_path / "out").bad_clips == []


@pytest.mark.parametrize("langs", [None, ["eng"]])
def test_locale_folders_of_no_supported_language_are_named_with_the_supported_ones(tmp_path, audio_file, layouts,
                                                                                   langs):
    """A --root holding af_za/ alone (a real FLEURS locale the registry has no language for) was told "no FLEURS
    locale folders found (expected e.g. en_us/...)"; the line names the folders found, says they are of no supported
    language, and lists the locales that are."""
    root = tmp_path / "fleurs"
    audio_file(root / "af_za" / "audio" / "train" / "afr1.wav", seconds=0.3)
    layouts.write_fleurs_table(root / "af_za" / "train.tsv", [("1", "afr1.wav", "afr 1.", 4800)])
    (root / "notes").mkdir()  # no locale's name: not named
    with pytest.raises(LLMSRTError) as e:
        prepare_fleurs(root, langs, tmp_path / "out")
    supported = ", ".join(sorted(languages.by_fleurs_locale()))
    assert str(e.value).endswith(
        "it holds af_za/, a FLEURS locale folder of no language llm-srt supports (those of llm_srt/languages.py: "
        f"{supported}; add an entry there for another)")
    assert str(e.value).startswith(f"{root}: ")
    assert "en_us" in supported and "af_za" not in supported
