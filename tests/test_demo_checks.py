"""The demo's up-front checks and the set-up it stands on (llm_srt/demo_checks.py, the Makefile's debs): what is
refused before any work, and in one line a user of `llm-srt demo` can act on."""
from dataclasses import replace

import pytest


class _Stop(Exception):
    pass


def test_make_debs_updates_apt_lists_for_an_unknown_package_only_where_they_are_empty(tmp_path):
    """`make demo` and `make test` run `make debs`: on Ubuntu, which has no package chromium, every run ran
    `sudo apt-get update` for it (and asked for a password). dpkg, apt-cache, apt-get, sudo and id are stand-ins."""
    import os
    import shutil
    import subprocess
    from pathlib import Path

    import pytest

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "log"
    scripts = {"dpkg": 'case " $FAKE_MISSING " in *" $2 "*) exit 1;; esac',  # dpkg -s PACKAGE
               "apt-cache": 'case " $FAKE_UNKNOWN " in *" $2 "*) exit 100;; esac',  # apt-cache show PACKAGE
               "apt-get": f'echo "apt-get $*" >> {log}', "sudo": f'echo "sudo $1" >> {log}; exec "$@"',
               "id": "echo 1000"}
    for name, body in scripts.items():
        (fake / name).write_text(f"#!/bin/sh\n{body}\n")
        (fake / name).chmod(0o755)
    lists, empty = tmp_path / "lists", tmp_path / "empty"
    lists.mkdir()
    empty.mkdir()
    (lists / "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4").write_text("")

    def debs(missing: str, apt_lists: Path) -> tuple[list[str], str]:
        log.write_text("")
        env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "FAKE_MISSING": missing,
               "FAKE_UNKNOWN": "chromium"}
        done = subprocess.run(["make", "-s", "--no-print-directory", "debs", f"APT_LISTS={apt_lists}"],
                              cwd=Path(__file__).parents[1], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return log.read_text().splitlines(), done.stdout

    calls, said = debs("chromium", lists)
    assert calls == [] and said.startswith("chromium: no such package in this system's apt sources")
    calls, said = debs("chromium", empty)  # a fresh image: the lists are read once, and chromium is still unknown
    assert calls == ["sudo apt-get", "apt-get update -qq"] and "skipped" in said
    calls, said = debs("chromium sox", lists)  # a package apt has: updated, then installed (chromium left out)
    assert calls == ["sudo apt-get", "apt-get update -qq", "sudo apt-get", "apt-get install -y -qq sox"]
    assert "installing Debian packages: sox" in said


def test_the_demo_refuses_float16_before_any_work():
    """--dtype float16 was accepted up front and refused by the first stage's config, after the corpus was built."""
    import pytest

    from llm_srt import demo

    for dtype in ("float16", "fp16"):
        with pytest.raises(demo.LLMSRTError, match=rf"^--dtype {dtype}: the demo trains, and training takes bfloat16 "
                                                   r"or float32 frozen weights; use auto, float32 or bfloat16"):
            demo.demo_placement(dtype, print)


def test_an_unknown_dtype_is_refused_with_the_demos_own_choices():
    """`llm-srt demo --dtype foo` was told to use float16 or int8 (every command's list), which the demo refuses."""
    import re

    import pytest

    from llm_srt import demo

    for dtype in ("foo", "half", "float64"):
        with pytest.raises(demo.LLMSRTError) as refused:
            demo.demo_placement(dtype, print)
        assert str(refused.value) == (f"--dtype {dtype}: unknown dtype; the demo takes auto, float32 or bfloat16 (or "
                                      "fp32, bf16)")
        assert not {"float16", "fp16", "int8"} & set(re.findall(r"\w+", str(refused.value)))  # (bfloat16 is fine)


def test_the_demo_refuses_a_copy_of_the_package_without_the_repository(tmp_path, monkeypatch):
    """A non-editable install has no configs/ or checkpoints/ beside the package: the demo converted the models and
    built the corpus (minutes), then failed with a `git checkout` hint for files the user never had."""
    import pytest

    from llm_srt import demo, embedded

    site = tmp_path / "site-packages"  # where REPO points from an installed copy: no configs/ there
    site.mkdir()
    monkeypatch.setattr(demo, "REPO", site)
    monkeypatch.setattr(demo, "CONFIGS", site / "configs" / "embedded")
    monkeypatch.setattr(demo, "DEMO_CONFIGS", site / "configs" / "embedded" / "demo")
    called = []

    def ensure_embedded():
        called.append(True)
        raise _Stop

    monkeypatch.setattr(embedded, "ensure_embedded", ensure_embedded)
    with pytest.raises(demo.LLMSRTError, match=r"configs/embedded/demo: not found; llm-srt demo runs from a clone of "
                                               r"the repository \(make setup installs it editable\)$"):
        demo.run_demo(tmp_path / "work", tmp_path / "data", log=lambda line: None)
    assert called == [] and not (tmp_path / "work").exists()


@pytest.mark.long(5)
def test_a_work_folder_trained_with_other_settings_is_refused_naming_work(tmp_path):
    """Another --dtype or --seed in the same --work stopped with the training's "Choose another output_dir ... or add
    allow_changes=true", which `llm-srt demo` has no flag for; so did a run interrupted and resumed with them."""
    import shutil
    from pathlib import Path

    import demo_stubs
    from llm_srt import demo
    from llm_srt.train.curriculum import Stage

    work = tmp_path / "work"
    cfg = demo_stubs.tiny_stage(tmp_path / "tiny", work, steps=2).config
    quiet = dict(log=lambda *_: None)
    demo.run_with_budget([Stage("srt", Path("srt.yaml"), cfg)], **quiet)
    (work / "report").mkdir()  # not a run: not named
    start = work / "srt" / "final"  # another ASR stage (--asr): here the run itself, which started from scratch
    finished = {"dtype 'auto' -> 'bfloat16'": replace(cfg, dtype="bfloat16"),
                "data.seed 0 -> 1; seed 0 -> 1": replace(cfg, seed=1, data=replace(cfg.data, seed=1)),
                f"model.init_from {start}: other weights than it was trained from (scratch)":
                    replace(cfg, model=replace(cfg.model, init_from=str(start)))}
    interrupted = {"dtype 'auto' -> 'bfloat16'": replace(cfg, dtype="bfloat16"),  # its checkpoints, no final/ (a
                   "data.seed 0 -> 1": replace(cfg, seed=1, data=replace(cfg.data, seed=1))}  # seed is refused apart)
    for other in (finished, interrupted):
        if other is interrupted:
            shutil.rmtree(start)
        for changed, config in other.items():
            with pytest.raises(demo.LLMSRTError) as refused:
                demo.run_with_budget([Stage("srt", Path("srt.yaml"), config)], **quiet)
            assert str(refused.value) == (f"{work} holds runs trained with other settings ({changed}): give another "
                                          f"--work, or remove {work / 'srt'}"), changed


def test_a_refused_run_is_the_only_one_named_to_remove(tmp_path, monkeypatch):
    """A runs/demo/srt finished at another data.start_step (20: the demo's from 15:21 to 16:48 on 2026-12-07) is
    refused at its turn: the line told the user to remove every run in --work (baseline, smt and srt_no_smt too,
    hours of training); it names the refused run and the stages after it (trained from it) alone."""
    import json
    from pathlib import Path

    from llm_srt import demo, demo_checks
    from llm_srt.errors import ConfigError, LLMSRTError
    from llm_srt.train import curriculum, final, resume

    asr = tmp_path / "asr"
    asr.mkdir()
    (asr / "config.json").write_text("{}")
    work = tmp_path / "work"
    stages = demo.demo_stages(work, tmp_path / "data", asr=asr)["curriculum"]
    for run in ("baseline", "smt", "srt", "srt_no_smt"):
        (work / run / final.FINAL).mkdir(parents=True)
        (work / run / final.FINAL / "config.json").write_text("{}")
    srt = stages[1].config
    before = resume.run_settings(replace(srt, data=replace(srt.data, start_step=20)))
    (work / "srt" / final.FINAL / final.RUN_SETTINGS).write_text(json.dumps(before))
    monkeypatch.setattr(curriculum, "run_stages",
                        lambda stages, log: final._check_finished_settings(srt, work / "srt", 1, log))
    with pytest.raises(LLMSRTError, match=rf"^{work} holds runs trained with other settings \(data.start_step 20 -> "
                                          rf"0\): give another --work, or remove {work / 'srt'}$"):
        demo_checks.run_with_budget(stages, log=lambda *_: None)

    def smt_refused(stages, log):  # as run_stages marks the stage that stopped (its line names no folder here)
        e = ConfigError("dtype 'auto' -> 'bfloat16' differ from the checkpoint's: dtype 'auto' -> 'bfloat16'. Set "
                        "them back")
        e.curriculum_stage = ("smt", ())
        raise e
    monkeypatch.setattr(curriculum, "run_stages", smt_refused)
    with pytest.raises(LLMSRTError, match=rf"or remove {work / 'smt'}, {work / 'srt'}$"):
        demo_checks.run_with_budget(stages, log=lambda *_: None)
    assert Path(stages[0].config.output_dir) == work / "smt"
