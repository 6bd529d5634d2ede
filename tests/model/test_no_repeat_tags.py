"""--no-repeat-ngram counts an SRT output's transcript and its translation each alone, and its language tags in
neither: in an LLM whose vocabulary splits a tag into pieces (Gemma's "<|eng|><|deu|>": "<", "|", "eng", "|", "><",
...), the pieces repeat ("|" four times), and counted they were blocked: `--no-repeat-ngram 1` wrote "<g|>" into the
transcript of the embedded model, and no translation."""

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from llm_srt.model.decoding import PartNGrams
from llm_srt.model.systems import TranslationStart

import tiny


@pytest.fixture(scope="module")
def tok():
    """A char-level tokenizer without tag tokens: a tag is written as its characters, "|" twice in each."""
    vocab = {t: i for i, t in enumerate(tiny.SPECIALS + tuple(tiny.CHARS) + tuple("<|>"))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def banned_while_writing(tok, text: str, n: int) -> dict[int, str]:
    """Each position of `text` whose character the processor bans as the next token (greedy: one row, one beam)."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    ngrams = PartNGrams(n, TranslationStart(tok, [True]), beams=1)
    banned = {}
    for k in range(1, len(ids)):
        scores = ngrams(torch.tensor([ids[:k]]), torch.zeros(1, len(tok)))
        if scores[0, ids[k]] == float("-inf"):
            banned[k] = text[k]
    return banned


@pytest.mark.parametrize("lead", ["", "<|eng|><|deu|>"])  # an output may begin with the prompt's tags again
def test_tags_between_transcript_and_translation_are_counted_in_neither(tok, lead):
    text = f"{lead}cat<|eng|><|deu|>Katze"  # each text's characters differ (n = 1 blocks any repeat in a part)
    assert banned_while_writing(tok, text, 1) == {}
    assert banned_while_writing(tok, text + " ", 2) == {}
    start = len(lead) + len("cat<|eng|><|deu|>")
    # a repeat within a part is still blocked; the translation may repeat the transcript's "a" and "t"
    assert banned_while_writing(tok, text + "a", 1) == {start + 5: "a"}
    assert banned_while_writing(tok, f"{lead}catc", 1) == {len(lead) + 3: "c"}
    assert banned_while_writing(tok, f"{lead}cat cat<|eng|><|deu|>Katze", 2) == {len(lead) + 5: "a", len(lead) + 6: "t"}


def test_a_tag_head_inside_the_ids_decoded_is_still_a_tag(tok):
    """Only the last ids are decoded (their text may begin inside a tag): a long transcript's tags still pass."""
    transcript = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"
    assert banned_while_writing(tok, f"{transcript}<|eng|><|deu|>Katze", 1) == {}
    assert banned_while_writing(tok, f"{transcript}<|eng|><|deu|>KatzeK", 1) == {len(transcript) + 19: "K"}
