"""COMET's side of `llm-srt evaluate --comet`: run by the Python of the COMET environment (unbabel-comet pins
numpy < 2 and transformers < 5, so it cannot share ours), never imported by llm_srt. It imports nothing of llm_srt.

    python -I comet_bridge.py REQUEST.json RESPONSE.json

(-I: this file's folder, which holds llm_srt's own comet.py, and $PYTHONPATH stay out of sys.path, so `import comet`
is unbabel-comet and nothing of our environment's numpy or transformers leaks in.) llm_srt imports `is_path` from it.

REQUEST: {"model": a checkpoint file (.../checkpoints/model.ckpt), a model folder holding one, or a COMET model name
(e.g. "Unbabel/wmt22-comet-da", downloaded once into the Hugging Face cache), "samples": [{"src", "mt", "ref"}, ...],
"batch_size": int, "gpus": int or null (null: 1 when CUDA is available), "option": the caller's option that named the
model, which its errors name (evaluate's --comet, score's --comet-model)}.
RESPONSE: {"scores": one float per sample, in order, "system_score": their mean, "checkpoint": the file loaded}.
An error is one line on stderr and exit status 2.
"""

import json
import logging
import sys
import warnings
from pathlib import Path


def is_path(model: str) -> bool:
    """Whether `model` names a file or folder (else a model name, "org/name", to download)."""
    return (Path(model).expanduser().exists() or model.startswith(("/", "./", "../", "~")) or model.endswith(".ckpt")
            or model.count("/") > 1)


def checkpoint(model: str, option: str = "--comet") -> str:
    """The checkpoint file of `model`: the file itself, a folder's checkpoints/model.ckpt, or a downloaded name;
    `option`: the caller's option that named it (where a failed download says to give a folder instead)."""
    path = Path(model).expanduser()
    if path.is_file():
        return str(path)
    if path.is_dir():
        ckpt = path / "checkpoints" / "model.ckpt"
        if not ckpt.is_file():
            raise ValueError(f"{path}: no checkpoints/model.ckpt in this folder (a COMET model folder holds "
                             "hparams.yaml and checkpoints/model.ckpt)")
        return str(ckpt)
    if is_path(model):
        raise ValueError(f"{model}: no such COMET checkpoint or folder (a model name to download reads org/name)")
    from comet import download_model

    try:
        return download_model(model)
    except KeyError:  # COMET's words for any download failure: "not supported by COMET"
        raise ValueError(f"{model}: cannot download it (no network, or no such COMET model); on a machine without the "
                         "Hugging Face hub, download the model elsewhere (e.g. `huggingface-cli download "
                         f"{model}`) and give its folder to {option}") from None


def main(request_path: str, response_path: str) -> int:
    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    logging.disable(logging.WARNING)  # Lightning's banners and tips
    warnings.filterwarnings("ignore")
    ckpt = checkpoint(request["model"], request.get("option") or "--comet")  # a bad path fails before the imports'
    #   seconds
    import torch
    from comet import load_from_checkpoint

    model = load_from_checkpoint(ckpt)
    gpus = request.get("gpus")
    if gpus is None:
        gpus = 1 if torch.cuda.is_available() else 0
    samples = request["samples"]
    scores = []
    if samples:
        out = model.predict(samples, batch_size=int(request.get("batch_size", 16)), gpus=gpus, progress_bar=False)
        scores = [float(s) for s in out.scores]
    if len(scores) != len(samples):
        raise ValueError(f"COMET returned {len(scores)} scores for {len(samples)} samples")
    Path(response_path).write_text(json.dumps({"scores": scores, "checkpoint": ckpt,
                                               "system_score": sum(scores) / len(scores) if scores else None}),
                                   encoding="utf-8")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(*sys.argv[1:3]))
    except Exception as e:  # one line for the caller, which shows it as its error
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"COMET: {type(e).__name__}: {message}", file=sys.stderr)
        sys.exit(2)
