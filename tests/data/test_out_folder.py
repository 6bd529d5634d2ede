"""What a converter does with the files an earlier `prepare` left in its --out: another corpus's manifests, or another
run's that differ, are moved aside (never replaced unsaid), and a rerun of the same command moves nothing."""

import json
from pathlib import Path

import pytest

from llm_srt.data.commonvoice import prepare_commonvoice
from llm_srt.data.covost2 import prepare_covost2
from llm_srt.data.fleurs import prepare_fleurs

SPLITS = ("train", "dev", "test")
FILES = tuple(f"{split}.jsonl" for split in SPLITS) + ("summary.json",)


@pytest.fixture
def cv_dir(tmp_path, audio_file, layouts):
    """A Common Voice 17+ locale folder (de/) with a clip per split."""
    root = tmp_path / "cv" / "de"
    for i, split in enumerate(SPLITS):
        clip = f"de_{i}.wav"
        audio_file(root / "clips" / clip, seconds=0.4 + 0.1 * i)
        rows = [{"client_id": f"spk{i}", "path": clip, "sentence_id": f"s{i}", "sentence": f"Satz {i}."}]
        layouts.write_cv_table(root / f"{split}.tsv", layouts.CV17_HEADER, rows)
        layouts.write_cv_table(root / "validated.tsv", layouts.CV17_HEADER, [])
    return root


@pytest.fixture
def fleurs_root(tmp_path, audio_file, layouts):
    """A FLEURS folder with en_us/ and de_de/, one sentence per split read in both."""
    root = tmp_path / "fleurs"
    for locale, code in (("en_us", "eng"), ("de_de", "deu")):
        for i, split in enumerate(SPLITS):
            name = f"{code}{i}.wav"
            audio_file(root / locale / "audio" / split / name, seconds=0.3)
            layouts.write_fleurs_table(root / locale / f"{split}.tsv", [(str(i + 1), name, f"{code} {i}.", 4800)])
    return root


@pytest.fixture
def covost(tmp_path, audio_file, layouts):
    """CoVoST 2's fr->en table and its Common Voice 4 locale folder (fr/), a clip per split."""
    tsv_dir, cv = tmp_path / "covost", tmp_path / "cv4" / "fr"
    clips = [f"fr_{i}.wav" for i in range(len(SPLITS))]
    for i, clip in enumerate(clips):
        audio_file(cv / "clips" / clip, seconds=0.4)
    layouts.write_cv_table(cv / "validated.tsv", layouts.CV4_HEADER,
                           [{"client_id": f"spk{i}", "path": clip, "sentence": f"Phrase {i}."}
                            for i, clip in enumerate(clips)])
    layouts.write_covost_table(tsv_dir / "covost_v2.fr_en.tsv", layouts.COVOST_RELEASE_HEADER,
                               [{"path": clip, "translation": f"Sentence {i}.", "split": split}
                                for i, (clip, split) in enumerate(zip(clips, SPLITS))])
    return tsv_dir, cv


def _contents(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_a_converter_moves_another_corpus_s_manifests_aside_and_says_so_in_one_line(cv_dir, fleurs_root, tmp_path):
    """`prepare fleurs --out X`, X holding Common Voice's manifests, replaced train/dev/test.jsonl and summary.json
    without a word (hours of conversion lost); they are moved to NAME.stale, named in one line of the summary."""
    out = tmp_path / "out"
    prepare_commonvoice(cv_dir, out)
    before = _contents(out)
    summary = prepare_fleurs(fleurs_root, ["eng", "deu"], out)
    after = _contents(out)
    assert sorted(after) == sorted(FILES + tuple(name + ".stale" for name in FILES))
    assert all(after[name + ".stale"] == before[name] for name in FILES)  # Common Voice's, byte for byte
    moved = [line for line in summary.lines() if line.startswith("moved ")]
    assert len(moved) == 1 and all(f"{name} to {name}.stale" in moved[0] for name in FILES), summary.lines()
    assert "commonvoice" in moved[0]
    assert json.loads(after["summary.json"])["notes"] == summary.notes


@pytest.mark.parametrize("corpus", ["fleurs", "covost2", "commonvoice"])
def test_a_rerun_of_the_same_command_moves_nothing_and_writes_the_same_bytes(corpus, cv_dir, fleurs_root, covost,
                                                                            tmp_path):
    out = tmp_path / "out"
    run = {"fleurs": lambda: prepare_fleurs(fleurs_root, ["eng", "deu"], out),
           "covost2": lambda: prepare_covost2(*covost, out),
           "commonvoice": lambda: prepare_commonvoice(cv_dir, out)}[corpus]
    run()
    first = _contents(out)
    summary = run()
    assert _contents(out) == first and summary.notes == []


def test_another_run_s_different_manifests_are_moved_aside_with_their_summary(fleurs_root, tmp_path):
    """The same corpus with other languages: the earlier run's manifests differ from this run's, and are kept."""
    out = tmp_path / "out"
    prepare_fleurs(fleurs_root, ["eng", "deu"], out)
    before = _contents(out)
    summary = prepare_fleurs(fleurs_root, ["eng"], out)
    after = _contents(out)
    assert all(after[name + ".stale"] == before[name] for name in FILES)
    assert len([line for line in summary.lines() if line.startswith("moved ")]) == 1


def test_a_second_file_moved_aside_never_replaces_the_first(cv_dir, fleurs_root, tmp_path):
    """The move renamed onto an existing NAME.stale: converting Common Voice, then FLEURS, then Common Voice again
    into one OUT lost Common Voice's first manifests. The second goes to NAME.stale.1, named in the line."""
    out = tmp_path / "out"
    prepare_commonvoice(cv_dir, out)
    cv = _contents(out)
    prepare_fleurs(fleurs_root, ["eng", "deu"], out)
    fleurs = _contents(out)
    summary = prepare_commonvoice(cv_dir, out, splits=("dev", "test"))
    after = _contents(out)
    assert all(after[name + ".stale"] == cv[name] for name in FILES)  # the first moved aside, kept
    assert all(after[name + ".stale.1"] == fleurs[name] for name in FILES)
    moved = [line for line in summary.lines() if line.startswith("moved ")]
    assert len(moved) == 1 and all(f"{name} to {name}.stale.1" in moved[0] for name in FILES), summary.lines()
