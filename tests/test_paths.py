"""paths.py: atomic writes of files and folders, where they fail part-way (a SIGTERM: tests/test_cli.py)."""

import errno
import os
import re
from pathlib import Path

import pytest

from llm_srt import paths
from llm_srt.errors import LLMSRTError


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc/self/fd (Linux)")
def test_a_file_system_that_refuses_chmod_still_gets_the_file_and_no_descriptor_leaks(tmp_path, monkeypatch):
    """vfat / exfat refuse chmod (EPERM): atomic_file failed every write there and leaked mkstemp's descriptor each
    time, although share_files takes such a file system as it is."""
    def refuse(fd, mode):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "fchmod", refuse)
    before = _open_fds()
    for k in range(20):
        with paths.atomic_file(tmp_path / "talk.srt") as f:
            f.write(f"take {k}\n")
    assert (tmp_path / "talk.srt").read_text() == "take 19\n"
    assert _open_fds() == before and sorted(p.name for p in tmp_path.iterdir()) == ["talk.srt"]
    with pytest.raises(ValueError):  # a mode fdopen refuses: its descriptor closed, its temporary file gone
        with paths.atomic_file(tmp_path / "x.bin", mode="nonsense"):
            pass
    assert _open_fds() == before and sorted(p.name for p in tmp_path.iterdir()) == ["talk.srt"]


@pytest.mark.parametrize("name", ["x" * 247 + ".srt", "ü" * 125 + "x.srt", "日本" * 41 + "a.srt"],
                         ids=["ascii", "two-byte", "three-byte"])
def test_a_name_near_the_file_systems_limit_is_written(tmp_path, name):
    """A valid 251-255-byte name: the temporary `.NAME.XXXXXXXX.tmp` beside it was 14 bytes longer than the limit
    (ENAMETOOLONG), and so was replace_all's backup name of the file it replaced. Cut on a character's boundary
    (UTF-8 bytes), a hash keeping two long names with the same start apart."""
    assert 251 <= len(name.encode()) <= 255
    target = tmp_path / name
    target.write_text("old\n")
    with paths.atomic_file(target) as f:
        f.write("new\n")
    assert target.read_text() == "new\n"
    staged: list[tuple[Path, Path]] = []
    twin = tmp_path / (name[:-4] + ".vtt")  # the same first 200 bytes: backups must not share a name
    twin.write_text("old twin\n")
    for p, text in ((target, "staged\n"), (twin, "staged twin\n")):
        with paths.atomic_file(p, staged=staged) as f:
            f.write(text)
    assert paths.short_name(target.name) != paths.short_name(twin.name)
    paths.replace_all(staged)
    assert (target.read_text(), twin.read_text()) == ("staged\n", "staged twin\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, twin.name])
    short = paths.short_name(name)
    assert len(short.encode()) <= paths.SHORT_NAME_BYTES and short.encode().decode() == short  # whole characters
    assert paths.short_name("talk.srt") == "talk.srt"  # a usual name is kept whole: OUTPUT_LEFTOVER still knows it
    folder = tmp_path / ("d" * 250)  # atomic_dir's NAME.tmp-PID and NAME.old-PID too (a converted model's folder)
    for text in ("first", "second"):
        with paths.atomic_dir(folder) as tmp:
            (tmp / "f").write_text(text)
    assert (folder / "f").read_text() == "second" and not paths.atomic_dir_leftovers(folder)


def test_atomic_dir_replacing_a_regular_file_leaves_nothing_beside_it(tmp_path):
    """A regular file under the name (not a folder) is replaced by the new folder and its renamed copy removed:
    rmtree left NAME.old-PID behind, a file no later write or leftover sweep of a running process removed."""
    target = tmp_path / "out"
    target.write_text("a file, not a folder")
    with paths.atomic_dir(target) as tmp:
        (tmp / "f").write_text("new")
    assert (target / "f").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_dir_puts_the_old_folder_back_when_the_last_rename_fails(tmp_path, monkeypatch):
    """Between `path.rename(old)` and `tmp.rename(path)` a failure of the second left no folder under `path` at all:
    the old one is renamed back and the new one removed, and the error raised."""
    target = tmp_path / "final"
    target.mkdir()
    (target / "model.safetensors").write_text("old weights")
    real_rename = Path.rename

    def rename(self, to):
        if self.name.startswith("final.tmp-"):
            raise OSError(errno.EIO, "Input/output error")
        return real_rename(self, to)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError, match="Input/output error"):
        with paths.atomic_dir(target) as tmp:
            (tmp / "model.safetensors").write_text("new weights")
    assert (target / "model.safetensors").read_text() == "old weights"
    assert [p.name for p in tmp_path.iterdir()] == ["final"]


def test_atomic_dir_refuses_the_current_folder_and_writes_a_links_target(tmp_path, monkeypatch):
    """`.` has no name to put a temporary folder beside (ValueError after a whole conversion), and replaced it would
    leave the process in a removed folder: refused, as a folder holding it is; a link was renamed away with the old
    folder (`.old-<pid>`, never removed) and a real folder put in its place."""
    from llm_srt.errors import LLMSRTError

    (tmp_path / "here" / "deeper").mkdir(parents=True)
    (tmp_path / "here" / "f").write_text("x")
    monkeypatch.chdir(tmp_path / "here")
    for where in (".", "./", tmp_path / "here"):
        with pytest.raises(LLMSRTError, match="is or holds the current folder"):
            with paths.atomic_dir(where):
                pass
    monkeypatch.chdir(tmp_path / "here" / "deeper")
    with pytest.raises(LLMSRTError, match="is or holds the current folder"):
        with paths.atomic_dir(".."):
            pass
    assert os.getcwd() == str(tmp_path / "here" / "deeper") and (tmp_path / "here" / "f").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"]  # no temporary folder left
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link").symlink_to("here")
    with paths.atomic_dir(tmp_path / "link") as tmp:
        (tmp / "g").write_text("y")
    assert (tmp_path / "link").is_symlink() and (tmp_path / "here" / "g").read_text() == "y"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here", "link"]


def test_atomic_dir_writes_where_the_processs_own_folder_was_removed(tmp_path, monkeypatch):
    """A job started in a scratch folder removed since: getcwd() fails, and every checkpoint save failed with
    "No such file or directory" (the current-folder check); an absolute path is written as before."""
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    with paths.atomic_dir(tmp_path / "out") as tmp:
        (tmp / "f").write_text("x")
    assert (tmp_path / "out" / "f").read_text() == "x"


def test_folder_write_errors_are_one_line_and_other_errors_pass(tmp_path):
    """A write of the folder (or its atomic_dir temporary beside it) that fails: one line with the free space; an
    OSError of another file (an input's) passes unchanged."""
    from llm_srt.errors import LLMSRTError

    out = tmp_path / "out"
    with pytest.raises(LLMSRTError, match=rf"^{out}: cannot write the model there \(No space left on device; "
                                          r"[\d.]+ GB free there\); free space there or choose another folder$"):
        with paths.folder_write_errors(out, "the model", "choose another folder"):
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / f"out.tmp-{os.getpid()}" / "a"))
    with pytest.raises(LLMSRTError, match=r"\(Permission denied; .*\); choose another folder$"):
        with paths.folder_write_errors(out, "the model", "choose another folder"):
            raise PermissionError(errno.EACCES, "Permission denied", str(out))
    for error in (PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "input.bin")),
                  OSError(errno.EIO, "Input/output error")):
        with pytest.raises(type(error)):
            with paths.folder_write_errors(out, "the model", "choose another folder"):
                raise error


def test_atomic_file_writes_a_links_target_and_keeps_the_link(tmp_path):
    """atomic_file renamed its temporary file over the link: link.txt became a file of the new text, target.txt kept
    the old (a plain open() and atomic_dir write where the link points). Staged writes (manifests) too."""
    (tmp_path / "data").mkdir()
    target = tmp_path / "data" / "target.txt"
    target.write_text("old\n")
    link = tmp_path / "link.txt"
    link.symlink_to(os.path.join("data", "target.txt"))
    with paths.atomic_file(link) as f:
        f.write("new\n")
    assert link.is_symlink() and os.readlink(link) == os.path.join("data", "target.txt")
    assert target.read_text() == "new\n" and sorted(p.name for p in (tmp_path / "data").iterdir()) == ["target.txt"]
    staged: list[tuple[Path, Path]] = []
    with paths.atomic_file(link, staged=staged) as f:
        f.write("staged\n")
    paths.replace_all(staged)
    assert link.is_symlink() and target.read_text() == "staged\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "link.txt"]


def test_a_relative_cache_is_named_as_the_folder_it_is(tmp_path, monkeypatch):
    """A relative LLM_SRT_CACHE, run from another folder: "the embedded encoder is not converted yet
    (cache/models/whisper-base); run llm-srt setup" looked like the cache's, and setup made a second 1.4 GB copy in
    the current folder. The folder is named whole."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(paths.CACHE_ENV, "cache")
    assert paths.cache_dir() == tmp_path / "cache"
    with pytest.raises(LLMSRTError, match=re.escape(f"not converted yet ({tmp_path}/cache/models/whisper-base)")):
        paths.resolve_model(paths.EMBEDDED, "encoder")


@pytest.mark.parametrize("value, kind", [("embeded", "llm"), ("Embedded", "encoder"), ("EMBEDED", "llm")])
def test_a_mistyped_embedded_is_refused_naming_it(value, kind, tmp_path, monkeypatch):
    """`--llm embeded` or `model.llm=Embedded` read as a folder: "no such folder" (or "not a Hugging Face model
    folder") without a word of `embedded`. A folder of that name, where there is one, is still the folder."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LLMSRTError) as e:
        paths.resolve_model(value, kind)
    assert str(e.value) == (f"{value}: no such folder (did you mean 'embedded', the embedded default "
                            f"{'encoder' if kind == 'encoder' else 'LLM'}?)")
    (tmp_path / value).mkdir()
    assert paths.resolve_model(value, kind) == value
    for far in ("embedding", "/models/embeded", "embeds"):  # three edits away, or a path: as it is
        assert paths.resolve_model(far, kind) == far
