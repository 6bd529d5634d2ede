"""The GPU check's env step and its wheels (scripts/gpu_check_env.py): what this Python can import, what the
GPU image lacks and `make fetch-wheels` brings, and a failed install's report."""

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_check  # noqa: E402
import gpu_check_env  # noqa: E402
import gpu_check_pytest  # noqa: E402
import gpu_check_report  # noqa: E402
import gpu_check_runner  # noqa: E402


def test_the_environment_step_names_the_gpu_the_check_runs_on(tmp_path, monkeypatch):
    """--device cuda:1: GPU 1's name and memory in the report, not GPU 0's; cuda / auto: the current GPU's."""
    import types

    import torch

    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: asked.append(i) or f"GPU {i}")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: asked.append(i) or types.SimpleNamespace(
        total_memory=(i + 1) * 2**30))
    for device, index in (("cuda:1", 1), ("cuda", 2), ("auto", 2)):
        asked.clear()
        env = gpu_check_env.env_step(types.SimpleNamespace(device=device, asked=device, out=tmp_path))
        assert asked == [index, index] and env["gpu"] == f"GPU {index}" and env["gpu_memory_gib"] == index + 1
    # this machine's torch is the pinned release under a local build tag (2.13.0+cpu; +cu128 on a GPU): not "other"
    import importlib.metadata as md

    assert "+" in md.version("torch") or md.version("torch") == "2.13.0"
    assert not any(v.startswith("torch ") for v in env.get("other_versions", []))


CARRY_MIB = 63  # of a device call's 64 MiB, for the tracked tree and .whl/ together


def test_the_tree_and_the_wheels_fit_one_device_call():
    """A device call carries the working tree and .whl/ within 64 MiB: the tracked files were 39.5 MiB (30.7 of them
    the embedded checkpoints) and the wheels 22.4 MiB, 61.9 in all; a little more of either and the one GPU
    session's check cannot travel. The tracked files as checked out, and .whl/ where fetched (else what `make
    fetch-wheels` last brought: WHEELS_MIB), stay under CARRY_MIB."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if listed.returncode != 0:
        pytest.skip(f"no git checkout here to list the tracked files of ({listed.stderr.decode().strip()})")
    sizes = {name: (ROOT / name).lstat().st_size for name in listed.stdout.decode().split("\0")
             if name and os.path.lexists(ROOT / name)}
    wheels = list((ROOT / ".whl").glob("*.whl"))
    wheel_mib = sum(w.stat().st_size for w in wheels) / 2**20 if wheels else gpu_check_env.WHEELS_MIB
    tree_mib = sum(sizes.values()) / 2**20
    largest = ", ".join(f"{name} {sizes[name] / 2**20:.1f} MiB" for name in sorted(sizes, key=sizes.get)[-4:][::-1])
    assert tree_mib + wheel_mib <= CARRY_MIB, (
        f"the tracked files ({tree_mib:.1f} MiB) and .whl/ ({wheel_mib:.1f} MiB) make {tree_mib + wheel_mib:.1f} MiB, "
        f"past {CARRY_MIB} of the 64 MiB a device call carries: drop a wheel the GPU check can do without from "
        f"GPU_WHEELS, or move a large file out of the tracked tree (the largest: {largest})")


def test_every_wheel_is_pinned_in_constraints():
    pins = gpu_check_env.pinned(gpu_check_env.GPU_WHEELS, ROOT / "constraints.txt")
    assert len(pins) == len(gpu_check_env.GPU_WHEELS) and all("==" in p for p in pins)
    assert "transformers==5.23.0" in pins  # the version the tests run with, not the GPU image's own
    with pytest.raises(SystemExit, match="no-such-package"):
        gpu_check_env.pinned(("no-such-package",), ROOT / "constraints.txt")


IMAGE = ("torch", "accelerate", "sacrebleu", "numpy", "tokenizers", "safetensors", "huggingface-hub", "pyyaml", "tqdm",
         "matplotlib", "tensorboard", "pytest")  # what the GPU image brings, as GPU_WHEELS' comment lists it


UNIMPORTED = {"typer": "transformers' command-line tool alone imports it",
              "requests": "gguf imports it only to download a model"}  # required, never imported by what we run


WHEEL_PYTHON = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux", "os_name": "posix",
                "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
                "platform_python_implementation": "CPython", "extra": ""}  # what the wheels are fetched for


def _requires(dist: str) -> list[str]:
    """The names of what distribution `dist` (as installed here) requires on WHEEL_PYTHON, without extras."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    needs = [Requirement(r) for r in md.requires(dist) or []]
    return [r.name for r in needs if r.marker is None or r.marker.evaluate(WHEEL_PYTHON)]


def test_the_wheels_bring_what_they_require_that_the_gpu_image_lacks():
    """fetch-wheels downloads with --no-deps ("the list is complete"), and it was not: fastapi imports annotated_doc
    at its own import and requires anyio, uvicorn requires click and h11, jiwer click; on an image without them
    tests/serve was left out. Each requirement of a wheel (on the wheels' Python) is now another wheel, or the
    image's: a package it lists, or one those require (not through huggingface-hub, whose requirements change with
    each release: requests, then httpx and click, then httpx2)."""
    import importlib.metadata as md

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    image, todo = set(), list(IMAGE)
    while todo:
        name = norm(todo.pop())
        if name in image:
            continue
        image.add(name)
        with contextlib.suppress(md.PackageNotFoundError):  # one not installed here adds only its name
            todo += _requires(name) if name != "huggingface-hub" else []
    wheels = {norm(name) for name in gpu_check_env.GPU_WHEELS}
    lacking = {f"{name} (required by {wheel})" for wheel in gpu_check_env.GPU_WHEELS for name in _requires(wheel)
               if norm(name) not in wheels | image | set(UNIMPORTED)}
    assert not lacking, f"GPU_WHEELS lacks {', '.join(sorted(lacking))}"


def test_missing_wheels_fail_the_environment_and_stop_the_check_on_a_gpu(tmp_path, monkeypatch):
    """Without .whl/ carried, every step failed on ImportError after spending its time; the environment step now
    names what is missing, and on a GPU nothing else runs."""
    import importlib.util
    import types

    import torch

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "soxr" else real(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "GPU")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(total_memory=2**30))
    env = gpu_check_env.env_step(types.SimpleNamespace(device="cuda", asked="cuda", out=tmp_path))
    assert env["ok"] is False and env["error"].startswith("missing soxr: carry .whl/") and env["fatal"]
    ran = []
    monkeypatch.setattr(gpu_check, "cuda_tests_step", lambda *a: ran.append("cuda-tests") or {"ok": True})
    monkeypatch.setattr(gpu_check, "e2e_step", lambda *a: ran.append("e2e") or {"ok": True})
    rc = gpu_check.main(["run", "--out", str(tmp_path), "--device", "cuda", "--steps", "env,cuda-tests,e2e"])
    assert rc == 1 and ran == []


def test_a_missing_optional_wheel_fails_the_environment_but_the_check_goes_on_without_what_needs_it(tmp_path,
                                                                                                  monkeypatch):
    """Any of ten modules missing stopped the whole GPU session at env, fastapi or gguf as much as transformers,
    though the benches need none of them. Now only one every later step imports stops it; another fails env, naming
    it, and cuda-tests leaves out the test folders that import it, saying so."""
    import importlib.util
    import types

    import torch

    real = importlib.util.find_spec
    gone = {"fastapi", "gguf"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in gone else real(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "GPU")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(total_memory=2**30))
    env = gpu_check_env.env_step(types.SimpleNamespace(device="cuda", asked="cuda", out=tmp_path))
    assert env["ok"] is False and not env["fatal"] and env["unimportable"] == ["fastapi", "gguf"]
    assert env["error"] == ("cannot import gguf (missing); fastapi (missing) (the check goes on); left out of "
                            "cuda-tests: tests/serve")
    assert gpu_check_pytest.left_out_folders() == {"tests/serve": "fastapi missing"}
    check = gpu_check_runner.Check(tmp_path, tmp_path, "cuda", "auto", budget_s=60)
    argvs = []
    monkeypatch.setattr(check, "run", lambda name, argv, timeout: argvs.append(argv) or gpu_check_runner.Done(
        argv, 0, "tests/test_device.py::test_x PASSED\n", ""))
    result = check.step("cuda-tests", gpu_check_pytest.cuda_tests_step, check, ["auto"])
    files = result["files"]
    assert result["left_out"] == {"tests/serve": "fastapi missing"} and argvs[0][-len(files):] == files
    assert "tests/test_device.py" in files and not [f for f in files if f.startswith("tests/serve/")]
    gpu_check_report.write_report(check, time.time())
    check.log.close()
    assert "; left out tests/serve (fastapi missing) |" in (tmp_path / "report.md").read_text()
    ran = []
    monkeypatch.setattr(gpu_check, "cuda_tests_step", lambda *a: ran.append("cuda-tests") or {"ok": True})
    monkeypatch.setattr(gpu_check, "e2e_step", lambda *a: ran.append("e2e") or {"ok": True})
    rc = gpu_check.main(["run", "--out", str(tmp_path), "--device", "cuda", "--steps", "env,cuda-tests,e2e"])
    assert rc == 1 and ran == ["cuda-tests", "e2e"]  # failed (env), having run the rest
    assert "fastapi (missing)" in json.loads((tmp_path / "report.json").read_text())["steps"][0]["error"]
    row = next(line for line in (tmp_path / "report.md").read_text().splitlines() if line.startswith("| env |"))
    assert "| FAILED |" in row and ", cannot import gguf (missing); fastapi (missing) (the check goes on)" in row


def test_auto_on_a_gpu_machine_whose_torch_sees_no_gpu_fails_instead_of_rehearsing_on_the_cpu(tmp_path, monkeypatch):
    """DEVICE=auto fell back to the CPU plan where torch saw no GPU and reported "passed": on the device machine a
    CPU-only torch would spend the GPU session proving nothing. Where nvidia-smi is on PATH, env now fails and the
    check stops; --device cpu stays the rehearsal, and auto on a machine without a GPU still runs it."""
    import types

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for asked, smi, fails in (("auto", "/usr/bin/nvidia-smi", True), ("cpu", "/usr/bin/nvidia-smi", False),
                              ("auto", None, False)):
        monkeypatch.setattr(gpu_check_env.shutil, "which", lambda name, *a: smi if name == "nvidia-smi" else None)
        env = gpu_check_env.env_step(types.SimpleNamespace(device="cpu", asked=asked, out=tmp_path))
        assert (env["ok"], env["fatal"]) == (not fails, fails), (asked, smi, env)
    monkeypatch.setattr(gpu_check_env.shutil, "which", lambda name, *a: "/usr/bin/nvidia-smi")
    ran = []
    monkeypatch.setattr(gpu_check, "cuda_tests_step", lambda *a: ran.append("cuda-tests") or {"ok": True})
    rc = gpu_check.main(["run", "--out", str(tmp_path), "--steps", "env,cuda-tests"])  # --device auto
    report = json.loads((tmp_path / "report.json").read_text())
    assert rc == 1 and ran == [] and report["outcome"] == "FAILED"
    assert "yet nvidia-smi is on PATH (/usr/bin/nvidia-smi): a GPU machine whose torch sees none" in (
        report["steps"][0]["error"])
    rc = gpu_check.main(["run", "--out", str(tmp_path), "--device", "cpu", "--steps", "env,cuda-tests"])
    assert rc == 0 and ran == ["cuda-tests"]


def test_fetching_wheels_again_clears_the_earlier_ones(tmp_path, monkeypatch):
    """Two versions of one package side by side (after a pin moved) made pip refuse the install on the GPU."""
    (tmp_path / "transformers-5.0.0-py3-none-any.whl").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("kept")
    (tmp_path / ".fetch-interrupted").mkdir()  # an earlier fetch's, stopped mid-way: .whl/ travels whole
    (tmp_path / ".fetch-interrupted" / "peft-0.1-py3-none-any.whl").write_bytes(b"half")
    downloads = []
    monkeypatch.setattr(gpu_check_env.subprocess, "run", lambda argv: downloads.append(Path(argv[argv.index("-d") + 1]))
                        or subprocess.CompletedProcess(argv, 0))
    assert gpu_check.main(["fetch-wheels", "--dest", str(tmp_path / "whl")]) == 0
    # downloaded inside dest (.whl/, git-ignored), not beside it: the repository's root travels with the tree
    assert downloads[0].parent == tmp_path / "whl" and downloads[0].name.startswith(".fetch-")
    assert gpu_check.main(["fetch-wheels", "--dest", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "whl"]


def test_a_module_found_but_not_importable_fails_the_environment_with_its_reason(tmp_path, monkeypatch):
    """The environment step looked for each module without importing it: a wheel built for another Python, or one
    whose shared library is missing, passed, and every step that imported it failed later, having spent its time."""
    import importlib
    import types

    real = importlib.import_module

    def import_module(name, *a, **k):  # peft and fastapi, imported here first, pass package=
        if name == "soxr":
            raise ImportError("libsoxr.so.0: cannot open shared object file")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", import_module)
    env = gpu_check_env.env_step(types.SimpleNamespace(device="cpu", asked="cpu", out=tmp_path))
    assert env["ok"] is False and env["error"] == (
        "cannot import soxr (ImportError: libsoxr.so.0: cannot open shared object file): carry .whl/ built for this "
        "machine's Python (make fetch-wheels here first) or install them")
    assert gpu_check_env.unimportable("json") is None and gpu_check_env.unimportable("no_such_module_here") == "missing"

    class Refuse:  # a finder that refuses by raising (the reviewer's bare-machine simulation): not a broken check
        def find_spec(self, name, path=None, target=None):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(sys, "meta_path", [Refuse(), *sys.meta_path])
    assert gpu_check_env.unimportable("no_such_module_here") == "missing"


def _env_step_with_wheels(tmp_path, wheels, out) -> subprocess.CompletedProcess:
    """gpu-check.sh's env step into `out`, installing the wheels of folder `wheels` under tmp_path/site."""
    python = tmp_path / "python3.12"  # says it is CPython 3.12 (the wheels' Python), else this Python
    python.write_text(f'#!/bin/sh\ncase "$*" in *version_info*) exit 0;; esac\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    env = dict(os.environ, GPU_PYTHON=str(python), USE_WHEELS="1", WHEEL_DIR=str(wheels),
               WHEEL_SITE=str(tmp_path / "site"))
    return subprocess.run([str(ROOT / "scripts" / "gpu-check.sh"), str(out), "cpu", "--steps", "env"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def test_a_failed_wheel_install_leaves_a_report_saying_why(tmp_path):
    """With `set -e`, a failed pip install of .whl/ ended gpu-check.sh before any report existed: the one GPU
    session's OUT held nothing. Now report.json and report.md say why, and the exit status is 1."""
    wheels = tmp_path / "whl"
    wheels.mkdir()
    (wheels / "broken-1.0-py3-none-any.whl").write_bytes(b"not a zip")
    out = tmp_path / "out"
    done = _env_step_with_wheels(tmp_path, wheels, out)
    report = json.loads((out / "report.json").read_text())
    assert done.returncode == 1 and report["outcome"] == "FAILED" and not report["ok"] and report["steps"] == []
    assert report["error"].startswith(f"pip install of {wheels}/*.whl into {tmp_path / 'site'} failed: ERROR: ")
    assert "broken" in report["error"] and "**FAILED** before any step" in (out / "report.md").read_text()
    assert "broken" in (out / "pip-install.log").read_text()


def _wheel(folder: Path, name: str) -> Path:
    """A pure-Python wheel of one module `name` (name.py) that pip installs."""
    import zipfile

    wheel = folder / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    files = {f"{name}.py": "ANSWER = 42\n", f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return wheel


@pytest.mark.slow  # two whole env steps (29-50 s); its all-fail twin, a failed install's report, stays in make test
def test_one_bad_wheel_does_not_lose_the_others(tmp_path):
    """pip installs .whl/ as one batch: one bad wheel failed it, and the check ended before any step with none of
    the wheels installed. Now the rest are installed one by one and the check runs (its env step names what cannot
    be imported); only when none installs does it end before any step."""
    wheels = tmp_path / "whl"
    wheels.mkdir()
    _wheel(wheels, "gpu_check_good")
    (wheels / "broken-1.0-py3-none-any.whl").write_bytes(b"not a zip")
    out = tmp_path / "out"
    done = _env_step_with_wheels(tmp_path, wheels, out)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]  # env FAILED, naming the wheel
    assert (tmp_path / "site" / "gpu_check_good.py").is_file()
    assert "not installed: broken-1.0-py3-none-any.whl (pip-install.log)" in done.stderr
    report = json.loads((out / "report.json").read_text())  # said in the report too, the check going on
    [step] = [s for s in report["steps"] if s["step"] == "env"]
    assert step["wheels_not_installed"] == ["broken-1.0-py3-none-any.whl"] and not step["fatal"]
    assert "not installed from .whl/ (pip-install.log): broken-1.0-py3-none-any.whl" in step["error"]
    (wheels / "broken-1.0-py3-none-any.whl").unlink()  # the same OUT again, every wheel installing: none named
    done = _env_step_with_wheels(tmp_path, wheels, out)
    assert done.returncode == 0 and json.loads((out / "report.json").read_text())["outcome"] == "passed", done.stderr


def _a_gpu(monkeypatch) -> None:
    """torch sees one CUDA GPU (for the env step and the plan; no step here touches it)."""
    import types

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "GPU")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(total_memory=2**30))


def test_a_module_the_gpu_image_should_bring_fails_the_environment_and_what_needs_it(tmp_path, monkeypatch):
    """pytest, pyyaml and tensorboard come from the GPU image, not .whl/; env checked only the wheels' modules, so on
    an image without tensorboard env passed and e2e then failed every command on its import, its report blaming the
    product ("the killed run sealed fewer than two checkpoints"). Then any of the three stopped the check at env,
    though only cuda-tests needs pytest and only e2e tensorboard: a GPU session lost its benches (the compiled 7B
    rows have never run anywhere) for want of a TensorBoard log. Now env fails, naming the module, and stops the
    check only for pyyaml (every step's configs, the bench's too); the step that needs another fails, not run."""
    import types

    real = gpu_check_env.unimportable
    gone = {"tensorboard"}
    monkeypatch.setattr(gpu_check_env, "unimportable", lambda name: "missing" if name in gone else real(name))
    monkeypatch.setattr(gpu_check_runner, "unimportable", gpu_check_env.unimportable)  # Check.step's, for e2e
    _a_gpu(monkeypatch)
    env = gpu_check_env.env_step(types.SimpleNamespace(device="cuda", asked="cuda", out=tmp_path))
    assert env["ok"] is False and not env["fatal"]
    assert env["error"] == ("the GPU image lacks tensorboard (missing), which .whl/ does not bring (GPU_WHEELS counts "
                            "on the image for it): install it, or add its wheels to GPU_WHEELS; the check goes on "
                            "without e2e")
    ran = []
    monkeypatch.setattr(gpu_check, "cuda_tests_step", lambda *a: ran.append("cuda-tests") or {"ok": True})
    monkeypatch.setattr(gpu_check, "e2e_step", lambda *a: ran.append("e2e") or {"ok": True})
    monkeypatch.setattr(gpu_check, "bench_step", lambda check, shape, memory, compiled=None, leave=0.0: ran.append(
        f"bench {shape}{' compiled' if compiled else ''}") or {"ok": True})
    assert gpu_check.main(["run", "--out", str(tmp_path), "--device", "cuda"]) == 1
    assert ran == ["cuda-tests", "bench qwen2.5-7b compiled", "bench qwen2.5-7b"]
    steps = {s["step"]: s for s in json.loads((tmp_path / "report.json").read_text())["steps"]}
    assert [steps[name]["ok"] for name in ("env", "cuda-tests", "e2e", "bench-compiled-qwen2.5-7b",
                                           "bench-qwen2.5-7b")] == [False, True, False, True, True]
    assert steps["e2e"]["error"].startswith("not run: needs tensorboard (missing), which the GPU image lacks")
    assert "| e2e | FAILED |" in (tmp_path / "report.md").read_text()
    gone = {"yaml", "pytest"}  # every step's configs: the check stops at env, naming both
    env = gpu_check_env.env_step(types.SimpleNamespace(device="cuda", asked="cuda", out=tmp_path))
    assert env["ok"] is False and env["fatal"] and "goes on" not in env["error"]
    assert env["error"].startswith("the GPU image lacks yaml (missing); pytest (missing), which .whl/ does not bring")
    ran.clear()
    assert gpu_check.main(["run", "--out", str(tmp_path), "--device", "cuda"]) == 1 and ran == []
