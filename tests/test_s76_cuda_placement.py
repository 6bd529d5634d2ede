"""The Python API's `SpeechTranslator.from_pretrained(model, device="cuda:1")` made no GPU current (the CLI's verbs,
evaluate and serve do: `device.make_current`): what runs on "the current GPU" (--compile's CUDA graphs, library
handles) ran on cuda:0 beside weights on cuda:1. It now makes the placement's GPU current before the model loads; a
CPU placement is left as it is. (No GPU here: torch.cuda.set_device and the placement are faked.)"""

import torch

from llm_srt import device, infer
from llm_srt.infer import SpeechTranslator


class _System:
    name = "stub"


def test_from_pretrained_makes_an_indexed_gpu_current_before_the_model_loads(monkeypatch):
    made = []
    monkeypatch.setattr(torch.cuda, "set_device", made.append)
    monkeypatch.setattr(device, "resolve", lambda spec, dtype: device.Placement(
        torch.device(spec) if spec == "cpu" else torch.device("cuda", 1), torch.bfloat16))
    monkeypatch.setattr(infer, "load_system", lambda model, placement, **kw: made.append(("loaded", placement.device))
                        or _System())
    translator = SpeechTranslator.from_pretrained("m", device="cuda:1")
    assert made == [torch.device("cuda", 1), ("loaded", torch.device("cuda", 1))]
    assert isinstance(translator.system, _System) and translator.name == "m"
    made.clear()
    SpeechTranslator.from_pretrained("m", device="cpu")  # the CPU: no GPU is made current
    assert made == [("loaded", torch.device("cpu"))]
