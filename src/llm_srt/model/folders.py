"""A model folder's frozen encoder and LLM checked before either loads (`SpeechLLM.from_pretrained`): each one that is
not there said in one error with the option that re-points it (the LLM loaded first, for minutes, and then the
encoder's absence was said; each only once the other was found)."""

from pathlib import Path

from ..errors import LLMSRTError
from ..paths import EMBEDDED, cwd_note, embedded_llm_dir, embedded_whisper_dir, meant_embedded

CONFIG_FILE = "config.json"  # a Hugging Face folder's, and a model folder's (SpeechLLM.save_pretrained)


MODEL_FOLDER_OPTIONS = {"encoder": ("--encoder", "--encoder"), "llm": ("--llm", "--model-llm")}  # a model folder's
#   key -> the option that re-points it in translate and serve, and in evaluate


def model_folder_problem(value: str, kind: str) -> str | None:
    """What keeps `value` (a model folder's encoder or llm: a folder, or "embedded") from being the `kind` (encoder |
    llm) folder it loads, read before anything loads: no such folder, no config.json, the embedded one not converted
    yet (the one place `llm-srt setup` helps). None where it has its config.json, or is a file (the loaders say what
    such a file is: a GGUF one, a CTranslate2 one). `evaluate.models._model_folder` asks the same."""
    what = "a Hugging Face Whisper folder" if kind == "encoder" else "a Hugging Face model folder"
    if not isinstance(value, str):  # a damaged config.json: loading says what is wrong with it
        return None
    if value == EMBEDDED:
        folder = embedded_whisper_dir() if kind == "encoder" else embedded_llm_dir()
        return None if (folder / CONFIG_FILE).is_file() else f"not converted yet at {folder}: run `llm-srt setup`"
    folder = Path(value)
    if folder.is_file() or (folder / CONFIG_FILE).is_file():
        return None
    meant = f" (did you mean {EMBEDDED!r}?)" if meant_embedded(value) else ""
    return f"not {what}: {'no config.json' if folder.exists() else 'no such folder'}{meant}{cwd_note(folder)}"


def check_model_folders(directory: Path, config, given: set[str]) -> None:
    """Refuse, before either loads, a model folder's encoder and LLM that are not there, every one of them in one
    error with the option that re-points it (the LLM loaded first, for minutes, and then the encoder's absence was
    said; each only once the other was found). `given`: the keys (encoder, llm) the caller re-pointed, not read from
    `directory`'s config.json."""
    problems = {kind: why for kind in ("encoder", "llm")
                if (why := model_folder_problem(getattr(config, kind), kind)) is not None}
    if not problems:
        return
    named = [f"the {kind} {getattr(config, kind)} ({why})" for kind, why in problems.items() if kind not in given]
    said = [f"{directory / CONFIG_FILE} names {' and '.join(named)}"] if named else []
    said += [f"the {kind} given, {getattr(config, kind)} ({why})" for kind, why in problems.items() if kind in given]
    kinds = [kind for kind in problems if getattr(config, kind) != EMBEDDED]  # the embedded ones: `llm-srt setup`
    if not kinds:
        raise LLMSRTError("; ".join(said))
    moved = any(kind not in given for kind in kinds)
    options = (f"{' and '.join(MODEL_FOLDER_OPTIONS[k][0] for k in kinds)} of translate and serve, "
               f"{' and '.join(MODEL_FOLDER_OPTIONS[k][1] for k in kinds)} of evaluate; "
               f"{' and '.join(f'model.{k}' for k in kinds)} in a training config")
    raise LLMSRTError(f"{'; '.join(said)}; {'a model folder moved to another machine: ' if moved else ''}give its "
                      f"{' and '.join(kinds)} where {'they are' if len(kinds) > 1 else 'it is'} now ({options})")
