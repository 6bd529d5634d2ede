"""The auxiliary CTC loss (model/ctc.py): its value by hand, what it rewards, and how SpeechLLM.forward uses it."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tiny  # tests/model is on sys.path (pytest rootdir insertion)
from llm_srt.errors import LLMSRTError
from llm_srt.model.ctc import CTCHead, CTCLoss
from llm_srt.model.speech_llm import tokenize_batch

def _table(vocab: int = 10, dim: int = 6, seed: int = 0) -> nn.Embedding:
    torch.manual_seed(seed)
    return nn.Embedding(vocab, dim)


def _head(table: nn.Embedding, blank_like: torch.Tensor | None = None) -> CTCHead:
    head = CTCHead(table.embedding_dim)
    if blank_like is not None:
        head.blank.data.copy_(blank_like)
    return head


def test_one_token_over_two_frames_is_minus_log_the_sum_of_its_three_paths():
    embed = _table()
    head = _head(embed)
    head.log_scale.data.fill_(math.log(2.0))  # a soft softmax: a loss far from 0
    speech = torch.randn(1, 2, 6)
    loss = head.loss(speech, torch.ones(1, 2, dtype=torch.bool), [[7]], embed, negatives=0)[0]
    # by hand: the softmax runs over the blank and token 7 only (no negatives); paths 7 7, 7 -, - 7
    columns = F.normalize(torch.stack([head.blank, embed.weight[7]]), dim=-1)
    p = (2.0 * F.normalize(speech[0], dim=-1) @ columns.T).softmax(-1)  # (2 frames, [blank, 7])
    paths = p[0, 1] * p[1, 1] + p[0, 1] * p[1, 0] + p[0, 0] * p[1, 1]
    # "mean": divided by 1 target token
    assert loss.item() == pytest.approx(-math.log(paths.item()), rel=1e-5) and loss.item() > 0.1


def test_speech_on_the_spoken_tokens_in_order_scores_far_better_than_in_another_order():
    embed = _table(vocab=40, dim=16)
    blank = torch.randn(16)
    head = _head(embed, blank)
    tokens = [5, 9, 21, 30]
    rows = lambda ids: torch.stack([blank if i is None else embed.weight[i] for i in ids]).detach()[None]  # noqa
    aligned = rows([None, 5, 5, None, 9, None, 21, 30, 30, None])
    shuffled = rows([None, 30, 30, None, 21, None, 9, 5, 5, None])
    mask = torch.ones(1, 10, dtype=torch.bool)
    good = head.loss(aligned, mask, [tokens], embed, negatives=0)[0]
    bad = head.loss(shuffled, mask, [tokens], embed, negatives=0)[0]
    assert good.item() < 0.05 < 5 < bad.item()
    assert head.greedy_tokens(aligned, mask, embed) == [tokens]
    good.backward()
    assert head.blank.grad is not None and head.log_scale.grad is not None  # both are learned


def test_padding_frames_are_left_out_and_a_token_said_twice_is_kept():
    embed = _table(vocab=40, dim=16)
    blank = torch.randn(16)
    head = _head(embed, blank)
    real = torch.stack([embed.weight[5], blank, embed.weight[5], embed.weight[9], embed.weight[9]]).detach()
    speech = torch.cat([real, torch.randn(3, 16)])[None]  # 3 padding frames of noise
    mask = torch.tensor([[True] * 5 + [False] * 3])
    alone = head.loss(real[None], mask[:, :5], [[5, 5, 9]], embed, negatives=0)[0]
    padded = head.loss(speech, mask, [[5, 5, 9]], embed, negatives=0)[0]
    assert padded.item() == pytest.approx(alone.item(), rel=1e-6)
    assert head.greedy_tokens(speech, mask, embed) == [[5, 5, 9]]


def test_a_row_with_fewer_speech_vectors_than_its_path_needs_is_counted_and_left_out_of_the_mean():
    """CTC needs a vector per token and one more between repeated tokens: [5, 5, 9] needs 4. Such a row's loss was 0
    (`zero_infinity`), averaged in: a batch of them trained nothing with a loss of 0.0 (a Q-Former of 4 queries)."""
    embed = _table(vocab=40, dim=16)
    head = _head(embed)
    speech = torch.randn(2, 4, 16)
    mask = torch.tensor([[True] * 4, [True] * 3 + [False]])
    fits, rows = head.loss(speech[:1], mask[:1], [[9, 5]], embed, negatives=0)
    assert rows.tolist() == [1.0, 1.0]
    both, rows = head.loss(speech, mask, [[9, 5], [5, 5, 9]], embed, negatives=0)  # the same columns: 5 and 9
    assert rows.tolist() == [1.0, 2.0] and both.item() == pytest.approx(fits.item(), rel=1e-6)
    # a batch whose rows all fit keeps F.ctc_loss's "mean" exactly
    log_probs = head._scores(speech, embed(torch.tensor([5, 9]))).log_softmax(-1).transpose(0, 1)
    mean = F.ctc_loss(log_probs, torch.tensor([2, 1, 1, 2]), torch.tensor([4, 3]), torch.tensor([2, 2]), blank=0)
    assert head.loss(speech, mask, [[9, 5], [5, 9]], embed, negatives=0)[0].item() == mean.item()
    none, rows = head.loss(speech[1:], mask[1:], [[5, 5, 9]], embed, negatives=0)
    assert rows.tolist() == [0.0, 1.0] and none.item() == 0.0
    none.backward()  # a loss still: no gradient, and no NaN from the row without an alignment
    assert head.blank.grad is not None and not head.blank.grad.any()


def test_negatives_are_drawn_from_torchs_generator_and_only_add_competitors():
    embed = _table(vocab=500, dim=16)
    head = _head(embed)
    speech = torch.randn(2, 8, 16)
    mask = torch.ones(2, 8, dtype=torch.bool)
    rows = [[3, 4], [7]]
    torch.manual_seed(1)
    a = head.loss(speech, mask, rows, embed, negatives=64)[0]
    torch.manual_seed(1)
    b = head.loss(speech, mask, rows, embed, negatives=64)[0]
    none = head.loss(speech, mask, rows, embed, negatives=0)[0]
    assert a.item() == b.item() and a.item() > none.item()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    return tiny.speech_llm(tmp_path_factory.mktemp("ctc"), adapter="linear", adapter_kwargs={"k": 2, "mlp_hidden": 32},
                           ctc_head=True).eval()


def _batch():
    return {"audio": [tiny.tone(0.8, 300), tiny.tone(1.2, 700, seed=1)], "prompts": ["<|eng|>", "<|deu|><|eng|>"],
            "targets": ["a cat", "der hund<|deu|><|eng|>the dog"], "transcripts": ["a cat", "der hund"]}


def test_ctc_only_trains_the_adapter_without_running_the_llm(model, monkeypatch):
    from llm_srt.model import speech_llm

    torch.manual_seed(3)
    expected, rows = model.ctc_loss(model.speech_embeddings(_batch(), llm_dtype=False), _batch()["transcripts"], 16)
    monkeypatch.setattr(speech_llm, "backbone_and_head", lambda *_: pytest.fail("the LLM ran"))
    torch.manual_seed(3)
    out = model(_batch(), ctc=CTCLoss(only=True, negatives=16))
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6) and out["ctc_loss"] == out["loss"]
    assert torch.equal(out["ctc_rows"], rows) and rows.tolist() == [2.0, 2.0]  # the recipe's count of the rows
    _, target_ids = tokenize_batch(model.tokenizer, _batch()["prompts"], _batch()["targets"])
    assert out["n_tokens"] == sum(map(len, target_ids))  # as the collator counts them: the token weights agree
    model.zero_grad()
    out["loss"].backward()
    trained = [*model.adapter.parameters(), *model.ctc_head.parameters()]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trained)
    assert {id(p) for p in model.trainable_parameters()} == {id(p) for p in trained}
    assert all(p.grad is None for p in model.llm.parameters())


def test_ctc_weight_adds_the_weighted_ctc_to_the_cross_entropy(model):
    ce = model(_batch())["loss"]
    torch.manual_seed(4)
    out = model(_batch(), ctc=CTCLoss(weight=0.5, negatives=16))
    assert out["loss"].item() == pytest.approx(ce.item() + 0.5 * out["ctc_loss"].item(), rel=1e-6)
    assert out["ctc_loss"] > 0 and not out["ctc_loss"].requires_grad
    assert model(_batch(), ctc=CTCLoss())["loss"].item() == pytest.approx(ce.item(), rel=1e-6)  # weight 0: off


def test_ctc_without_speech_or_transcripts_is_a_one_line_error(model):
    text_only = {"prompts": ["hello<|eng|><|deu|>"], "targets": ["hallo"], "transcripts": ["hello"]}
    with pytest.raises(LLMSRTError, match="needs speech and its transcripts"):
        model(text_only, ctc=CTCLoss(weight=1.0))
    no_transcripts = {k: v for k, v in _batch().items() if k != "transcripts"}
    with pytest.raises(LLMSRTError, match="ctc.weight: 0"):
        model(no_transcripts, ctc=CTCLoss(only=True))


def test_the_head_is_saved_while_a_stage_trains_with_it_and_loads_only_into_a_model_with_one(model, tmp_path):
    from llm_srt.model.speech_llm import CTC_FILE, SpeechLLM

    with torch.no_grad():
        model.ctc_head.blank.add_(1.0)
    folder = model.save_pretrained(tmp_path / "m")
    assert (folder / CTC_FILE).is_file()
    again = SpeechLLM.from_pretrained(folder)
    assert torch.equal(again.ctc_head.blank, model.ctc_head.blank)
    assert torch.equal(again.ctc_head.log_scale, model.ctc_head.log_scale)
    plain = SpeechLLM.from_pretrained(folder, ctc_head=False)  # a later stage without CTC: no head, file unread
    assert plain.ctc_head is None and not (plain.save_pretrained(tmp_path / "p") / CTC_FILE).exists()
    with pytest.raises(LLMSRTError, match="no CTC head"):
        plain(_batch(), ctc=CTCLoss(weight=1.0))


def test_a_head_saved_with_a_scalar_scale_still_loads(model, tmp_path):
    """Heads saved before log_scale became 1-D (FSDP shards no scalar parameter) load, and 1-D ones too."""
    from safetensors.torch import load_file, save_file

    from llm_srt.model.speech_llm import CTC_FILE, SpeechLLM

    assert model.ctc_head.log_scale.shape == (1,)
    folder = model.save_pretrained(tmp_path / "m")
    state = load_file(folder / CTC_FILE)
    save_file({**state, "log_scale": state["log_scale"].reshape(())}, folder / CTC_FILE)
    assert load_file(folder / CTC_FILE)["log_scale"].dim() == 0
    again = SpeechLLM.from_pretrained(folder)
    assert again.ctc_head.log_scale.shape == (1,) and torch.equal(again.ctc_head.log_scale, model.ctc_head.log_scale)
    shipped = load_file(Path(__file__).resolve().parents[2] / "checkpoints" / "embedded" / "asr" / CTC_FILE)
    assert CTCHead.upgrade_state(shipped)["log_scale"].shape == (1,)


def _ctc_on(folder, device: str, dtype: str) -> tuple[float, float]:
    """(CE, CTC) of one batch on `device` with frozen weights in `dtype`, bf16 under autocast as training runs it."""
    from llm_srt.model.speech_llm import SpeechLLM

    model = SpeechLLM.from_pretrained(folder, device=device, dtype=dtype, ctc_head=True).eval()
    batch = _batch()
    with torch.no_grad():  # as training reads them: encoder features computed beforehand (the feature cache)
        features, mask = model.encoder.encode(batch.pop("audio"))
    batch.update(features=features.float(), feature_mask=mask)
    torch.manual_seed(5)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
        out = model(batch, ctc=CTCLoss(weight=1.0, negatives=0))
    out["loss"].backward()
    assert model.ctc_head.blank.grad is not None and model.ctc_head.blank.grad.device.type == device
    return (out["loss"] - out["ctc_loss"]).item(), out["ctc_loss"].item()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_ctc_in_bfloat16_under_autocast_follows_the_cpus_float32(tmp_path, device):
    folder = tiny.speech_llm_folder(tmp_path, adapter="linear", adapter_kwargs={"k": 2, "mlp_hidden": 32},
                                    ctc_head=True)
    ce32, ctc32 = _ctc_on(folder, "cpu", "float32")
    ce16, ctc16 = _ctc_on(folder, device, "bfloat16")
    assert ctc16 == pytest.approx(ctc32, rel=0.05) and ce16 == pytest.approx(ce32, rel=0.05)


def test_scores_stay_float32_under_bf16_autocast():
    """The recipe's bf16 autocast would run the scores' product in bf16 (off by ~0.04 at the initial scale)."""
    torch.manual_seed(0)
    head, speech, table = CTCHead(64), torch.randn(2, 80, 64), torch.randn(500, 64)
    plain = head._scores(speech, table)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scored = head._scores(speech, table)
    assert scored.dtype == torch.float32 and torch.equal(scored, plain)


def test_a_lora_wrapped_embedding_table_is_scored_as_the_plain_one():
    """model.lora.target_modules with embed_tokens wraps the LLM's input table in peft's LoRA layer, which has no
    num_embeddings: the first CTC step with negatives stopped on an AttributeError. Its LoRA starts at zero, so the
    loss is the plain table's."""
    from peft import LoraConfig, inject_adapter_in_model

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = _table(vocab=40, dim=16)

    plain, wrapped = Holder(), inject_adapter_in_model(LoraConfig(r=2, target_modules=["embed_tokens"]), Holder())
    wrapped.load_state_dict(plain.state_dict(), strict=False)
    assert not isinstance(wrapped.embed_tokens, nn.Embedding)
    head, speech, mask = _head(plain.embed_tokens), torch.randn(2, 6, 16), torch.ones(2, 6, dtype=torch.bool)
    losses = []
    for holder in (plain, wrapped):
        torch.manual_seed(3)  # the negatives' draw
        losses.append(head.loss(speech, mask, [[4, 9], [11]], holder.embed_tokens, negatives=5)[0])
    assert torch.equal(losses[0], losses[1])
