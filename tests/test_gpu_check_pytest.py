"""The GPU check's cuda-tests step (scripts/gpu_check_pytest.py): which files it runs, what it counts when
pytest stops early, skips on a GPU, and test folders pytest cannot collect."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_check_env  # noqa: E402
import gpu_check_pytest  # noqa: E402
import gpu_check_runner  # noqa: E402


def test_cuda_tests_that_all_skip_on_a_gpu_fail_the_step(tmp_path, monkeypatch):
    """On the CPU the cuda tests skip, as they should; on a GPU a step in which none of them ran (every one skipped,
    or none collected) is a failure, not a pass."""
    test = tmp_path / "test_skips.py"
    test.write_text("import pytest\n\n@pytest.mark.cuda\ndef test_x():\n    pytest.skip('no GPU here')\n")
    for device, ok in (("cpu", True), ("cuda", False)):
        check = gpu_check_runner.Check(tmp_path, tmp_path, device, "auto", budget_s=120)
        result = gpu_check_pytest.cuda_tests_step(check, [str(test)])
        check.log.close()
        assert result["ok"] is ok and result["skipped"] == 1, result
    assert "no cuda test ran on the GPU (1 skipped of 1 collected)" in result["error"]


def test_cuda_tests_are_found_by_their_marker():
    files = gpu_check_pytest.cuda_test_files()
    assert "tests/test_device.py" in files and "tests/serve/test_serve_openai.py" not in files
    assert "tests/model/test_ctc.py" in files  # its cuda case is one parameter's (pytest.param(..., marks=))
    assert "tests/test_gpu_check.py" not in files  # names the marker in text only
    assert all(gpu_check_pytest.CUDA_MARK.search((ROOT / f).read_text()) for f in files)


def _pytest_check(tmp_path, device: str, tests: str, **limits):
    """cuda_tests_step over one file of `tests` on `device`, within `limits` (STEP_LIMITS' keys)."""
    test = tmp_path / "test_these.py"
    test.write_text("import time\n\nimport pytest\n\n" + tests)
    check = gpu_check_runner.Check(tmp_path, tmp_path, device, "auto", budget_s=120)
    with pytest.MonkeyPatch.context() as m:
        for key, seconds in limits.items():
            m.setitem(gpu_check_runner.STEP_LIMITS, key, seconds)
        result = check.step("cuda-tests", gpu_check_pytest.cuda_tests_step, check, [str(test)])
    check.log.close()
    return result


def test_a_pytest_stopped_at_its_limit_still_reports_the_tests_that_passed(tmp_path):
    """pytest writes its junit XML at its session's end: one stopped at the step's limit reported 0 passed. With
    -v each outcome is in the log as the test ends, and the step counts from there, naming the test that hung."""
    result = _pytest_check(tmp_path, "cpu", "pytestmark = pytest.mark.cuda\n\n\ndef test_a():\n    pass\n\n\n"
                           "def test_b():\n    pass\n\n\ndef test_hangs():\n    time.sleep(60)\n",
                           **{"cuda-tests": 12})
    assert result["ok"] is False and result["passed"] == 2 and result["tests"] == 2, result
    assert result["running_when_stopped"].endswith("test_these.py::test_hangs")
    assert "pytest exit 124; stopped while" in result["error"] and "gpu-check.log" in result["counted_from"]
    assert "2 passed, 0 failed, 0 errors, 0 skipped of 2, counted from gpu-check.log" in (
        tmp_path / "report.md").read_text()


def test_the_cuda_tests_get_a_per_test_timeout_where_pytest_timeout_is_installed(tmp_path, monkeypatch):
    real = gpu_check_pytest.importlib.util.find_spec
    for present in (True, False):
        monkeypatch.setattr(gpu_check_pytest.importlib.util, "find_spec",
                            lambda name, *a: (present or None) if name == "pytest_timeout" else real(name, *a))
        argv = gpu_check_pytest.pytest_argv(["tests/test_device.py"], tmp_path / "x.xml")
        assert "-v" in argv and argv[-1] == "tests/test_device.py"
        if present:
            assert argv[-3:-1] == ["--timeout", str(gpu_check_pytest.TEST_TIMEOUT_S)]
        else:
            assert "--timeout" not in argv


def test_a_cuda_test_that_skips_on_a_gpu_fails_the_step_with_its_reason(tmp_path):
    """On a GPU a cuda test has no reason to skip (each needs only torch and a GPU): one skipped beside others that
    passed let the step pass, proving nothing of it. Now it fails the step, naming the test and the reason."""
    tests = ("pytestmark = pytest.mark.cuda\n\n\ndef test_runs():\n    pass\n\n\n"
             "def test_skips():\n    pytest.skip('needs a CUDA GPU')\n")
    assert _pytest_check(tmp_path, "cpu", tests)["ok"] is True  # on the CPU they skip, as they should
    result = _pytest_check(tmp_path, "cuda", tests)
    assert result["ok"] is False and result["passed"] == 1 and result["skipped"] == 1, result
    assert result["error"].startswith("1 cuda test(s) skipped on the GPU: ") and "needs a CUDA GPU" in result["error"]
    assert "test_skips" in result["skips"][0] and "test_skips" in (tmp_path / "report.md").read_text()


def test_a_serve_conftest_without_fastapi_s_test_client_leaves_out_tests_serve_alone(monkeypatch):
    """tests/serve's conftest imports fastapi's TestClient, whose starlette.testclient raises a RuntimeError without
    httpx (which the image's huggingface-hub brings in some releases only): pytest stopped at that conftest (exit
    4) and all 22 cuda tests went with it. Env now names it, and cuda-tests leaves tests/serve out."""
    import importlib

    real = importlib.import_module

    def import_module(name, *a, **k):
        if name == "starlette.testclient":
            raise RuntimeError("The starlette.testclient module requires the httpx package to be installed.\n")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", import_module)
    assert gpu_check_env.unimportable("starlette.testclient") == (
        "RuntimeError: The starlette.testclient module requires the httpx package to be installed.")
    assert gpu_check_pytest.left_out_folders() == {"tests/serve": "starlette.testclient unimportable"}


@pytest.mark.parametrize("broken", ["conftest", "module"])
def test_a_test_folder_pytest_cannot_collect_costs_the_step_only_its_own_tests(tmp_path, broken):
    """An import error that env did not foresee, in one folder's conftest (pytest exit 4) or one test module (exit
    2), stopped pytest before any test: "pytest exit 4", 0 of 0. The step now runs pytest once more without what
    it could not collect, and fails, naming it: the other cuda tests still report."""
    (tmp_path / "serve").mkdir()
    (tmp_path / "serve" / "test_s.py").write_text("import pytest\n\n\n@pytest.mark.cuda\ndef test_s():\n    pass\n")
    boom = "raise RuntimeError('The starlette.testclient module requires the httpx package')\n"
    if broken == "conftest":
        (tmp_path / "serve" / "conftest.py").write_text(boom)
    else:
        (tmp_path / "serve" / "test_s.py").write_text(boom)
    (tmp_path / "test_ok.py").write_text("import pytest\n\npytestmark = pytest.mark.cuda\n\n\ndef test_a():\n    pass\n"
                                         "\n\ndef test_b():\n    pass\n")
    check = gpu_check_runner.Check(tmp_path, tmp_path, "cpu", "auto", budget_s=120)
    paths = [str(tmp_path / "test_ok.py"), str(tmp_path / "serve" / "test_s.py")]
    result = check.step("cuda-tests", gpu_check_pytest.cuda_tests_step, check, paths)
    check.log.close()
    assert [c["rc"] for c in result["commands"]] == [4 if broken == "conftest" else 2, 0], result
    assert result["ok"] is False and result["passed"] == 2 and result["files"] == paths[:1], result
    why = "RuntimeError: The starlette.testclient module requires the httpx package"
    assert result["uncollected"] == {paths[1]: f"{tmp_path / 'serve' / 'conftest.py'}: {why}" if broken == "conftest"
                                     else why}
    assert result["error"] == (f"pytest could not collect {paths[1]} ({result['uncollected'][paths[1]]}); the others "
                               "ran without them")
