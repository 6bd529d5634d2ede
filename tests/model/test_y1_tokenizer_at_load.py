"""model/weight_files.py `tokens_at`: a Whisper folder without vocabulary.txt (a hub download) decodes its text with
tokenizer.json, so one that is cut short, damaged or refused by the tokenizers library is refused as the folder loads,
in one line naming it, not after every clip of a batch has been decoded; a folder without tokenizer.json still loads
(ids only: language ID)."""

import json
import shutil
from pathlib import Path

import pytest
import torch

import tiny
from llm_srt.errors import LLMSRTError
from llm_srt.model.whisper_torch import TorchWhisper

SAID = r"/tokenizer.json: not a tokenizer \(.+\), so Whisper's tokens cannot become text; copy or download the model's "


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny.whisper_lid_dir(tmp_path_factory.mktemp("whisper-y1"))


def _damaged(folder, tmp_path, damage):
    damaged = tmp_path / "damaged"
    shutil.copytree(folder, damaged)
    path = damaged / "tokenizer.json"
    text = path.read_text()
    if damage == "cut":  # the added tokens (Whisper's special tokens, the ids checked) come first and stay whole
        cut = text.index("]", text.index('"added_tokens"')) + 1
        path.write_text(text[:cut + (len(text) - cut) // 2])
    elif damage == "not utf-8":
        path.write_bytes(text.encode().replace(b'"<unk>"', b'"\xe9"', 1))
    else:
        path.write_text("tokens")
    return damaged


@pytest.mark.parametrize("damage", ["cut", "not utf-8", "not json"])
def test_a_damaged_tokenizer_json_is_refused_as_the_folder_loads(folder, tmp_path, damage):
    damaged = _damaged(folder, tmp_path, damage)
    assert not (damaged / "vocabulary.txt").exists()
    with pytest.raises(LLMSRTError, match=rf"^{damaged}{SAID}tokenizer.json again$") as e:
        TorchWhisper.from_pretrained(damaged, torch.device("cpu"), torch.float32)
    assert "\n" not in str(e.value)


def test_an_unreadable_tokenizer_json_is_refused_as_the_folder_loads(folder, tmp_path, monkeypatch):
    unreadable = tmp_path / "unreadable"
    shutil.copytree(folder, unreadable)
    read_text = Path.read_text

    def refused(path, *args, **kwargs):
        if path.name == "tokenizer.json":
            raise PermissionError(13, "Permission denied", str(path))
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", refused)
    with pytest.raises(LLMSRTError, match=rf"^{unreadable}{SAID}tokenizer.json again$"):
        TorchWhisper.from_pretrained(unreadable, torch.device("cpu"), torch.float32)


def test_a_whole_tokenizer_json_or_none_loads(folder, tmp_path):
    whisper = TorchWhisper.from_pretrained(folder, torch.device("cpu"), torch.float32)
    assert whisper.decode_text([[whisper.generation.start, 5, 6, whisper.generation.eos]]) == [
        whisper.tokenizer.decode([5, 6])]
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare)
    (bare / "tokenizer.json").unlink()
    assert TorchWhisper.from_pretrained(bare, torch.device("cpu"), torch.float32).generation.eos >= 0


def _edited(raw: dict, damage: str) -> dict:
    if damage == "no model":
        return {"added_tokens": raw["added_tokens"]}
    if damage == "another model type":  # BPE without merges
        return {**raw, "model": {**raw["model"], "type": "BPE"}}
    return {**raw, "model": {**raw["model"], "vocab": {k: str(i) for k, i in raw["model"]["vocab"].items()}}}


@pytest.mark.parametrize("damage", ["no model", "another model type", "ids as text"])
def test_json_the_tokenizers_library_refuses_is_refused_as_the_folder_loads(folder, tmp_path, damage):
    """JSON whose added tokens (the ids checked) are whole but which the tokenizers library refuses loaded, and every
    clip of a batch decoded before the one line naming it at the first text; it is refused as the folder loads."""
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    path = other / "tokenizer.json"
    path.write_text(json.dumps(_edited(json.loads(path.read_text()), damage)))
    with pytest.raises(LLMSRTError, match=rf"^{other}{SAID}tokenizer.json again$"):
        TorchWhisper.from_pretrained(other, torch.device("cpu"), torch.float32)


def test_the_embedded_whisper_loads_by_its_tokenizer_json_and_a_damaged_one_is_refused(embedded, tmp_path):
    """The converted embedded Whisper base (CTranslate2's) loads with its vocabulary.txt and, without it, by its
    tokenizer.json alone (its ids checked there); a merge whose token is no longer in its vocabulary is refused at
    load (the weights are only mapped, never read)."""
    source = Path(embedded.whisper)
    assert TorchWhisper.from_pretrained(source, torch.device("cpu"), torch.float32).vocabulary is not None
    hub = tmp_path / "hub"
    hub.mkdir()
    for file in source.iterdir():
        if file.name != "vocabulary.txt":
            (hub / file.name).symlink_to(file)
    whisper = TorchWhisper.from_pretrained(hub, torch.device("cpu"), torch.float32)
    assert whisper.vocabulary is None and whisper.decode_text([[50258, 50259, 50359, 50363, 2425, 50257]]) == [
        whisper.tokenizer.decode([2425])]
    raw = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    del raw["model"]["vocab"][raw["model"]["merges"][0][0]]
    (hub / "tokenizer.json").unlink()
    (hub / "tokenizer.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(LLMSRTError, match=rf"^{hub}{SAID}tokenizer.json again$"):
        TorchWhisper.from_pretrained(hub, torch.device("cpu"), torch.float32)


def _with_vocabulary_txt(folder, to, damage):
    """A copy of `folder` with vocabulary.txt, `convert whisper-ct2`'s file (one token a line), damaged."""
    from tokenizers import Tokenizer

    shutil.copytree(folder, to)
    tokens = Tokenizer.from_file(str(to / "tokenizer.json")).get_vocab(with_added_tokens=True)
    lines = [token for token, _ in sorted(tokens.items(), key=lambda item: item[1])]
    lines += [f"<|{i}|>" for i in range(len(lines), json.loads((to / "config.json").read_text())["vocab_size"])]
    data = "\n".join(lines).encode() + b"\n"
    (to / "vocabulary.txt").write_bytes(data.replace(b"a\n", b"\xe9\n", 1) if damage == "not utf-8" else
                                        data[:data.rindex(b"\n", 0, -1) + 1] if damage == "a line short" else data)
    return to


@pytest.mark.parametrize("damage, said", [("not utf-8", r"cannot read it \(UnicodeDecodeError\)"),
                                          ("a line short", r"\d+ tokens for a vocabulary of \d+ \(config.json\)")])
def test_a_damaged_vocabulary_txt_is_refused_as_the_folder_loads(folder, tmp_path, damage, said):
    """vocabulary.txt decodes the text (tokenizer.json is not read then): one that is not UTF-8 or not the vocabulary
    loaded, its ids checked against tokenizer.json, and stopped only at the text after every clip had decoded."""
    damaged = _with_vocabulary_txt(folder, tmp_path / "damaged", damage)
    with pytest.raises(LLMSRTError, match=rf"^{damaged}/vocabulary.txt: {said}; delete it \(tokenizer.json is used "
                                          r"then\) or convert the model again$"):
        TorchWhisper.from_pretrained(damaged, torch.device("cpu"), torch.float32)


def test_a_whole_vocabulary_txt_decodes_as_tokenizer_json(folder, tmp_path):
    whole = _with_vocabulary_txt(folder, tmp_path / "whole", None)
    whisper = TorchWhisper.from_pretrained(whole, torch.device("cpu"), torch.float32)
    assert len(whisper.vocabulary) == whisper.dims.n_vocab
    assert whisper.decode_text([[5, 6, whisper.generation.eos]]) == [whisper.tokenizer.decode([5, 6])]
