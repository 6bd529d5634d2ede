"""Import of a reference LLM-SRT / SLAM-LLM model.pt, built here with the reference module structure."""

import pytest
import torch
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel

import tiny  # tests/model is on sys.path (pytest rootdir insertion)
from llm_srt.errors import LLMSRTError
from llm_srt.model.llm import LoraOptions
from llm_srt.model.slam import convert_slam
from llm_srt.model.speech_llm import SpeechLLM


class ReferenceProjector(nn.Module):
    """The reference EncoderProjectorQFormer: default Blip2QFormerConfig except the fields set below."""

    def __init__(self, encoder_dim, llm_dim, query_len, layers, hidden, mlp_hidden):
        super().__init__()
        cfg = Blip2QFormerConfig(hidden_size=hidden, num_attention_heads=hidden // 64, intermediate_size=2 * hidden)
        cfg.encoder_hidden_size = encoder_dim
        cfg.num_hidden_layers = layers
        self.query = nn.Parameter(torch.randn(1, query_len, hidden))
        self.qformer = Blip2QFormerModel(cfg)
        if mlp_hidden:
            self.linear1, self.relu, self.linear2 = nn.Linear(hidden, mlp_hidden), nn.ReLU(), nn.Linear(mlp_hidden,
                                                                                                      llm_dim)
        else:
            self.linear = nn.Linear(hidden, llm_dim)
        self.norm = nn.LayerNorm(llm_dim, eps=1e-5)

    def forward(self, x, atts):
        out = self.qformer(query_embeds=self.query.expand(x.shape[0], -1, -1), encoder_hidden_states=x,
                           encoder_attention_mask=atts).last_hidden_state
        out = self.linear2(self.relu(self.linear1(out))) if hasattr(self, "linear1") else self.linear(out)
        return self.norm(out)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("slam")
    return tiny.whisper_dir(root), tiny.llm_dir(root)


@pytest.mark.parametrize("mlp_hidden", [0, 40])
def test_import_gives_the_reference_projector_output(dirs, tmp_path, mlp_hidden):
    torch.manual_seed(0)
    whisper, llm = dirs
    ref = ReferenceProjector(32, 48, query_len=5, layers=3, hidden=128, mlp_hidden=mlp_hidden).eval()
    with torch.no_grad():  # round through bf16 as the reference stores it
        for p in ref.parameters():
            p.copy_(p.bfloat16().float())
    state = {"encoder_projector." + k: v.bfloat16() for k, v in ref.state_dict().items()}
    state["encoder_projector.qformer.encoder.layer.0.intermediate.dense.weight"] = torch.zeros(256, 128)  # unused
    torch.save(state, tmp_path / "model.pt")

    folder = convert_slam(tmp_path / "model.pt", tmp_path / "imported", whisper, llm)
    model = SpeechLLM.from_pretrained(folder).eval()
    kw = model.adapter.kwargs
    assert (kw["num_queries"], kw["num_layers"], kw["hidden_size"], kw["mlp_hidden"]) == (5, 3, 128, mlp_hidden)
    assert model.config.pad_to_30s and model.config.lora is None
    h = torch.randn(2, 9, 32)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 5:] = 0
    with torch.no_grad():
        expected = ref(h, mask)
        ours, _ = model.adapter(h, mask.bool())
    assert torch.allclose(ours, expected, atol=1e-5)


def test_import_with_lora(dirs, tmp_path):
    torch.manual_seed(1)
    whisper, llm = dirs
    ref = ReferenceProjector(32, 48, query_len=4, layers=2, hidden=64, mlp_hidden=0)
    state = {"encoder_projector." + k: v for k, v in ref.state_dict().items()}
    donor = tiny.speech_llm(tmp_path / "donor", lora=LoraOptions(r=2, alpha=32))
    lora = {}
    for name, p in donor.llm.named_parameters():
        if "lora_" in name:
            lora["llm." + name] = torch.randn_like(p).bfloat16()  # reference naming: llm.base_model.model....default
    assert any(".lora_A.default.weight" in k for k in lora)
    torch.save(state | lora, tmp_path / "model.pt")
    model = SpeechLLM.from_pretrained(convert_slam(tmp_path / "model.pt", tmp_path / "out", whisper, llm))
    assert model.config.lora.r == 2 and set(model.config.lora.target_modules) == {"q_proj", "v_proj"}
    loaded = dict(model.llm.named_parameters())
    for key, value in lora.items():
        assert torch.equal(loaded[key[len("llm."):]], value.float())


def test_import_reads_no_llm_weights_and_loads_from_anywhere(tmp_path, monkeypatch):
    """The LLM is only a skeleton during the import (a 32B one in float32 would take 131 GB), and the folder names
    its models so that it loads from another working directory when they were given as relative paths."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(2)
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    elsewhere.mkdir(parents=True)
    whisper, llm = tiny.whisper_dir(work), tiny.llm_dir(work)
    ref = ReferenceProjector(32, 48, query_len=4, layers=2, hidden=64, mlp_hidden=0).eval()
    donor = tiny.speech_llm(tmp_path / "donor", lora=LoraOptions(r=2, alpha=32))
    lora = {"llm." + n: torch.randn_like(p) for n, p in donor.llm.named_parameters() if "lora_" in n}
    torch.save({"encoder_projector." + k: v for k, v in ref.state_dict().items()} | lora, work / "model.pt")
    loads = []
    real = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    monkeypatch.chdir(work)
    convert_slam("model.pt", "out", whisper.name, llm.name)
    assert loads == []
    monkeypatch.chdir(elsewhere)
    model = SpeechLLM.from_pretrained(work / "out").eval()
    assert len(loads) == 1  # the spy sees a real load
    loaded = dict(model.llm.named_parameters())
    for key, value in lora.items():
        assert torch.equal(loaded[key[len("llm."):]], value)
    h = torch.randn(2, 9, 32)
    with torch.no_grad():
        assert torch.allclose(model.adapter(h)[0], ref(h, torch.ones(2, 9, dtype=torch.long)), atol=1e-5)


def test_wrong_llm_or_file(dirs, tmp_path):
    whisper, llm = dirs
    ref = ReferenceProjector(32, 64, query_len=4, layers=1, hidden=64, mlp_hidden=0)
    torch.save({"encoder_projector." + k: v for k, v in ref.state_dict().items()}, tmp_path / "model.pt")
    with pytest.raises(LLMSRTError, match="hidden size 48"):
        convert_slam(tmp_path / "model.pt", tmp_path / "out", whisper, llm)
    torch.save({"something.else": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(LLMSRTError, match="no encoder_projector.query"):
        convert_slam(tmp_path / "bad.pt", tmp_path / "out", whisper, llm)


def test_imported_checkpoint_runs_through_translate(dirs, tmp_path, capsys):
    """A converted reference checkpoint is a model folder like any other: `llm-srt translate` runs on it."""
    import json

    from llm_srt import cli
    from llm_srt.audio import write_wav

    whisper, llm = dirs
    ref = ReferenceProjector(32, 48, query_len=4, layers=2, hidden=64, mlp_hidden=0)
    torch.save({"encoder_projector." + k: v.bfloat16() for k, v in ref.state_dict().items()}, tmp_path / "model.pt")
    assert cli.main(["convert", "slam", str(tmp_path / "model.pt"), str(tmp_path / "imported"), "--encoder",
                     str(whisper), "--llm", str(llm)]) == 0
    assert cli.main(["convert", "slam", str(tmp_path / "model.pt"), str(tmp_path / "two-heads"), "--encoder",
                     str(whisper), "--llm", str(llm), "--num-heads", "2", "--lora-alpha", "16"]) == 0
    assert json.loads((tmp_path / "two-heads" / "config.json").read_text())["adapter_kwargs"]["num_heads"] == 2
    write_wav(tmp_path / "a.wav", tiny.tone(1.0, 440))
    capsys.readouterr()
    rc = cli.main(["translate", str(tmp_path / "a.wav"), "--model", str(tmp_path / "imported"), "--src", "eng",
                   "--tgt", "deu", "--format", "json", "--max-new-tokens", "6"])
    [result] = json.loads(capsys.readouterr().out)
    assert rc == 0 and result["error"] is None and isinstance(result["translation"], str)
