"""The files of `llm-srt translate --out-dir`: where each input's output goes (its path relative to the inputs'
common folder, or where a run before recorded it), the checks that keep a run from writing over an input, another
input's output or another run's results.json, and SETTINGS_FILE, the record of the settings and the input each file
was written with, which --skip-existing and --overwrite read. Every file is written whole or not at all.
translate.py decides what to write; this module where, and whether it may.
"""

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

from .errors import LLMSRTError, shown, warn_each_time
from .paths import atomic_file

INCOMPLETE = ".incomplete"  # an input that failed in part: its output's name with this after it
SETTINGS_FILE = ".llm-srt-translate.jsonl"  # in --out-dir: a line per file written, with the settings it took



PARTIAL_JSON = "results.partial.json"  # --format json --out-dir: the inputs done when Ctrl-C or SIGTERM stopped a run


def output_paths(inputs: Sequence[str], out_dir: Path, suffix: str) -> list[Path]:
    """Where each input's output goes under `out_dir`: its path relative to the deepest folder holding every input,
    with `suffix` for its extension (a/x.wav and b/x.wav -> OUT/a/x.srt and OUT/b/x.srt; inputs in one folder ->
    OUT/x.srt), or after its name where its extension has no letter (a part number: rec.001 -> OUT/rec.001.srt).
    Two different inputs that would still share an output (x.wav and x.flac, or names differing only in case) are
    refused before anything runs, naming both. The folder is that of the inputs that are files: a mistyped path or
    a folder among them (which fail alone) moved every other input's output one folder down."""
    absolute = [Path(os.path.abspath(p)) for p in inputs]
    common = Path(os.path.commonpath([str(p.parent) for p in ([p for p in absolute if p.is_file()] or absolute)]))
    outputs = [_named(out_dir / (p.relative_to(common) if p.parent.is_relative_to(common) else Path(p.name)), suffix)
               for p in absolute]
    _refuse_shared(inputs, outputs)
    return outputs


def _named(path: Path, suffix: str) -> Path:
    """`path` with `suffix` for its extension, or after its whole name where the extension has no letter in it: the
    numbered parts of a recording (rec.001, rec.002) or a date (2024.05.01) each had the one output rec.srt, and were
    refused as sharing it."""
    if any(c.isalpha() for c in path.suffix):
        return path.with_suffix(suffix)
    return path.with_name(path.name + suffix)


def _refuse_shared(inputs: Sequence[str], outputs: Sequence[Path]) -> None:
    """Two different inputs that would write one output, or an output that would overwrite an input: refused. An
    input that is no file (mistyped, a folder, a disk not mounted) fails alone and writes nothing: never refused."""
    absolute = [Path(os.path.abspath(p)) for p in inputs]
    first: dict[str, int] = {}
    for k, out in enumerate(outputs):
        if not absolute[k].is_file():
            continue
        j = first.setdefault(str(out).casefold(), k)
        if absolute[j] != absolute[k]:
            raise LLMSRTError(f"--out-dir: {shown(inputs[j])} and {shown(inputs[k])} would both write "
                              f"{shown(str(outputs[j]))}; rename one, or translate them into separate --out-dirs")
    check_not_inputs(inputs, outputs)


def recorded_places(inputs: Sequence[str], outputs: list[Path], out_dir: Path) -> list[Path]:
    """`outputs` (output_paths), but an input whose output a run before wrote in `out_dir` elsewhere keeps that
    place: output_paths places an input by the inputs given with it, so a run given fewer inputs (the ones that
    failed, again) put them under another folder, beside the files of the first run, and --skip-existing did not
    see them. An input recorded at several places keeps the place computed now if it is one of them, else the
    first in name order; only files there now, of the same format, count."""
    placed: dict[str, list[Path]] = {}
    for file, entry in written_with(out_dir).items():
        path = entry["input"].get("path") if isinstance(entry.get("input"), dict) else None
        if isinstance(path, str) and file.endswith(outputs[0].suffix) and (out_dir / file).is_file():
            placed.setdefault(path, []).append(out_dir / file)
    moved = [out if out in (there := sorted(placed.get(os.path.abspath(a), []))) or not there else there[0]
             for a, out in zip(inputs, outputs)]
    if moved != outputs:
        _refuse_shared(inputs, moved)
    return moved


def check_not_inputs(inputs: Sequence[str], outputs: Sequence[Path]) -> None:
    """Refuse outputs that would overwrite an input (an audio file named x.srt, translated into its own folder)."""
    given = {os.path.realpath(p): p for p in inputs}
    for out in outputs:
        if (hit := given.get(os.path.realpath(out))) is not None:
            raise LLMSRTError(f"--out-dir: the output {shown(str(out))} would overwrite the input {shown(hit)}; "
                              "choose another --out-dir")


def check_not_others(inputs: Sequence[str], outputs: Sequence[Path], out_dir: Path) -> None:
    """Refuse to write over an output that a run before wrote from another input still there, as two inputs of one
    run that would share a file are refused: recorders restart their numbering, so day2/ZOOM0001.WAV after
    day1/ZOOM0001.WAV into one --out-dir replaced day 1's subtitles without a word. The same input run again
    (another spelling of its path, a link to it) writes its output as before; so does an input whose file's
    recorded input is gone (moved or deleted: nothing to tell apart)."""
    written = written_with(out_dir)
    taken = []  # (input, output, the recorded input) of each output another input wrote
    for audio, out in zip(inputs, outputs):
        if not os.path.isfile(audio):  # a mistyped path or a folder fails alone and writes nothing
            continue
        given = (written.get(record_key(out, out_dir)) or {}).get("input")
        other = given.get("path") if isinstance(given, dict) else None
        if (isinstance(other, str) and os.path.realpath(other) != os.path.realpath(audio) and out.is_file()
                and os.path.exists(other)):
            taken.append((audio, out, other))
    if taken:
        audio, out, other = taken[0]
        more = f" (and {len(taken) - 1} more inputs)" if len(taken) > 1 else ""
        raise LLMSRTError(f"--out-dir: {shown(audio)} would overwrite {shown(str(out))}, which an earlier run wrote "
                          f"from {shown(other)}{more}; choose another --out-dir, or give --overwrite to replace it")


def check_results_kept(inputs: Sequence[str], out_dir: Path) -> None:
    """Refuse to replace a results.json (or a stopped run's PARTIAL_JSON, which a whole run removes) holding the
    result of an input this run does not translate: one file holds every input's, so a json run of other inputs
    into the same --out-dir lost them all without a word, as check_not_others keeps the per-input files from. The
    same inputs run again (or with more) replace it as before; a file that is no array of results (not this
    command's) is refused too."""
    given = {shown(os.path.realpath(a)) for a in inputs}  # as _json_entry writes "path"
    for file in (out_dir / "results.json", out_dir / PARTIAL_JSON):
        try:  # an entry's "path" is its input's, absolute; "audio" the path as the run before was given it, from a
            #   folder not known: an older entry's is compared only where it names a file from here
            others = [e["audio"] for e in json.loads(file.read_text(encoding="utf-8"))
                      if (e["path"] not in given if "path" in e else
                          os.path.exists(e["audio"]) and shown(os.path.realpath(e["audio"])) not in given)]
        except FileNotFoundError:
            continue
        except (OSError, ValueError, TypeError, KeyError):  # (a byte that is not UTF-8: a ValueError)
            others = None
        if others is None or others:
            more = f" and {len(others) - 1} more inputs" if others and len(others) > 1 else ""
            what = (f"the result of {shown(others[0])}{more}, which this run does not translate" if others else
                    "no array of llm-srt results")
            raise LLMSRTError(f"--out-dir: {shown(str(file))} holds {what}; choose another --out-dir, or give "
                              "--overwrite to replace it")


def files_fingerprint(path: Path) -> str:
    """The sha256 of the names, sizes and modification times of the files in a model folder (or of one file): a
    model trained again into the same folder, or weights copied over it, writes other outputs, which
    --skip-existing must not take for this model's (it compared the folder's path alone). Sizes and times, not the
    contents: the same for a folder's weights left alone, and read in microseconds."""
    digest = hashlib.sha256()
    for name, st in sorted(_files_under(path)):
        digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _files_under(path: Path) -> list[tuple[str, os.stat_result]]:
    """(name relative to `path`, stat) of every file in folder `path` (or of file `path` itself), through linked
    folders too (a model folder's `llm -> /shared/...`; each real folder once, so a link loop ends)."""
    if not path.is_dir():
        return [(path.name, path.stat())]
    out, seen = [], set()
    for root, dirs, files in os.walk(path, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        for f in files:
            try:
                out.append((Path(root, f).relative_to(path).as_posix(), Path(root, f).stat()))
            except OSError:  # a dangling link: nothing to read, so nothing the outputs came from
                continue
    return out


def is_stale(entry: dict | None, settings: dict, source: dict) -> bool:
    """Whether an output file with record `entry` is an earlier run's output of this very input (its path) from
    other audio (the file there now, another size or time) or with other settings: what an input that fails whole
    removes. Not a file without a record (the user's own), another input's, nor one whose audio cannot be read now
    (a file moved, a mount down: the output may be its only text)."""
    given = entry.get("input") if isinstance(entry, dict) else None
    return (isinstance(given, dict) and given.get("path") == source["path"] and "size" in source
            and entry != {"settings": settings, "input": source})


def record_key(path: Path, out_dir: Path) -> str:
    return path.relative_to(out_dir).as_posix()


def input_of(audio: str, transcript: str | None = None) -> dict:
    """Which input an output was written from: its path, size and time (the same name from another folder, or a
    file recorded again, is another input), and the sha256 of its given transcript (task smt: a corrected
    transcript is another input)."""
    path = Path(os.path.abspath(audio))  # as output_paths spells it: ../d1/a.wav and /x/d1/a.wav are one input
    given = {} if transcript is None else {"transcript_sha256": hashlib.sha256(transcript.encode()).hexdigest()}
    try:
        st = path.stat()
    except OSError:
        return {"path": str(path), **given}
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, **given}


def record_written(out_dir: Path, path: Path, settings: dict, source: dict) -> None:
    """Note that `path` now holds an output written with `settings` from the input `source` (`input_of`; after it
    is written whole: a kill between the two leaves a file without a record, which --skip-existing translates
    again)."""
    try:
        with open(out_dir / SETTINGS_FILE, "ab+") as f:
            cut = f.seek(0, os.SEEK_END) > 0 and f.seek(-1, os.SEEK_END) >= 0 and f.read(1) != b"\n"
            line = json.dumps({"file": record_key(path, out_dir), "settings": settings, "input": source},
                              sort_keys=True)
            f.write((("\n" if cut else "") + line + "\n").encode("utf-8"))  # after a line a kill cut: a line of its own
    except OSError as e:  # the output is written: only a later --skip-existing will translate it again
        warn_each_time(f"{out_dir / SETTINGS_FILE}: cannot note the settings of {path} ({e.strerror or e}); "
                       "--skip-existing will translate it again")  # one line under the command's name


RECORD_TYPES = {"file": (str,), "settings": (dict,), "input": (dict, type(None))}  # a record's keys ("input" absent
#   from records older than it)


def written_with(out_dir: Path) -> dict[str, dict]:
    """Output file (relative to `out_dir`) -> its last record ({"settings", "input"}: what it was written with and
    from); a line a kill cut (no JSON) is passed. A line of JSON in another shape (a hand edit) is an error naming
    it: read as a record, it stopped the run in a traceback."""
    written = {}
    path = out_dir / SETTINGS_FILE
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, start=1):
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                wrong = "the line" if not isinstance(entry, dict) else next(
                    (key for key, types in RECORD_TYPES.items() if not isinstance(entry.get(key), types)), None)
                if wrong is not None:
                    what = ("not a JSON object" if wrong == "the line" else
                            f"{wrong!r} is {json.dumps(entry.get(wrong))[:60]}")
                    raise LLMSRTError(f"{shown(str(path))}:{number}: not a record of llm-srt translate ({what}); fix "
                                      "that line or delete it (--skip-existing then translates its file again)")
                written[entry["file"]] = {"settings": entry["settings"], "input": entry.get("input")}
    except FileNotFoundError:
        pass
    except OSError as e:  # a folder of that name, a file this user may not read
        raise LLMSRTError(f"{shown(str(path))}: cannot read the record of the files written there ({e.strerror or e}); "
                          "make it readable, or choose another --out-dir") from None
    return written


def incomplete(path: Path) -> Path:
    """Where an input that failed in part has its output written (talk.srt -> talk.srt.incomplete: no output of
    another input can have that name, as every output ends in its format's suffix)."""
    return path.with_name(path.name + INCOMPLETE)


def write_whole(path: Path, text: str) -> None:
    """Write an output whole or not at all (`paths.atomic_file`: a kill never leaves half a file, which
    --skip-existing would take for a finished one)."""
    try:
        with atomic_file(path) as f:
            f.write(text)
    except OSError as e:
        raise LLMSRTError(f"{path}: cannot write the output ({e.strerror or e}); check --out-dir") from None
