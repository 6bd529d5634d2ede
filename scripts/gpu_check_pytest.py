"""The GPU check's cuda-tests step (scripts/gpu_check.py): `pytest -m cuda` over the test files that hold tests
marked cuda, its outcomes counted from the junit XML or, where pytest stopped first, from its -v lines."""

from __future__ import annotations

import importlib.util
import re
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from gpu_check_env import OPTIONAL_IMPORTS, ROOT, unimportable
from gpu_check_runner import STEP_LIMITS, Check

TEST_TIMEOUT_S = 90  # per cuda test, where pytest-timeout is installed (the GPU image has it): one that hangs fails
#   alone instead of taking the step's whole limit from the tests after it
CUDA_MARK = re.compile(r"^\s*@pytest\.mark\.cuda\b|^pytestmark\s*=.*\bmark\.cuda\b|\bmarks=pytest\.mark\.cuda\b",
                       re.MULTILINE)  # a decorator, a module's marks, or one parameter's (pytest.param(..., marks=))


def cuda_test_files() -> list[str]:
    """The test files that hold tests marked cuda: collecting only these keeps modules that import what the GPU
    machine lacks (ctranslate2, faster-whisper, openai: test-only dependencies) out of the run."""
    files = (p for p in sorted((ROOT / "tests").rglob("test_*.py")) if CUDA_MARK.search(p.read_text(encoding="utf-8")))
    return [str(p.relative_to(ROOT)) for p in files]


def pytest_argv(paths: list[str], xml: Path) -> list[str]:
    """The cuda tests' pytest command: -v writes each test's outcome to the log as it ends (the junit XML comes only
    at the session's end, so a pytest stopped at its limit left none), and with pytest-timeout a per-test limit."""
    timeout = ["--timeout", str(TEST_TIMEOUT_S)] if importlib.util.find_spec("pytest_timeout") else []
    return [sys.executable, "-m", "pytest", "-m", "cuda", "-v", "-rfEs", "-p", "no:cacheprovider",
            f"--junitxml={xml}", *timeout, *paths]


OUTCOME = re.compile(r"^(\S+::.+?) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)(?: \((.*)\))?(?:\s+\[\s*\d+%\])?\s*$")
WORSE = ("PASSED", "XPASS", "XFAIL", "SKIPPED", "FAILED", "ERROR")  # a test's outcome in -v: its worst line's (a
#   teardown error follows a PASSED line)


def pytest_outcomes(stdout: str) -> tuple[dict[str, tuple[str, str]], str | None]:
    """(node id -> (outcome, reason), the test that was running when pytest stopped or None) from `pytest -v`'s
    lines; a reason (a skip's, cut to the terminal's width) where pytest gives one."""
    tests: dict[str, tuple[str, str]] = {}
    running = None
    for line in stdout.splitlines():
        if match := OUTCOME.match(line):
            node, outcome, reason = match.groups()
            if node not in tests or WORSE.index(outcome) > WORSE.index(tests[node][0]):
                tests[node] = (outcome, reason or "")
            running = None
        elif "::" in line and line.strip() and " " not in line.strip():
            running = line.strip()  # -v writes a test's id as it starts, its outcome as it ends
    return tests, running


def left_out_folders() -> dict[str, str]:
    """The cuda test folders (OPTIONAL_IMPORTS) that import a module this Python cannot: folder -> why. Collecting
    one would fail the step on an ImportError that env has already reported."""
    gone = {name: why for name in OPTIONAL_IMPORTS if (why := unimportable(name)) is not None}
    left: dict[str, list[str]] = {}
    for name, why in gone.items():
        for folder in OPTIONAL_IMPORTS[name]:
            left.setdefault(folder, []).append(f"{name} {why}" if why == "missing" else f"{name} unimportable")
    return {folder: ", ".join(whys) for folder, whys in left.items()}


UNCOLLECTED = re.compile(r"^ImportError while loading conftest '(?P<conftest>.+)'\.$"  # (pytest's exit 4)
                         r"|^_+ ERROR collecting (?P<module>\S+) _+$", re.MULTILINE)  # a test module's (exit 2)


def uncollected(output: str, paths: list[str]) -> dict[str, str]:
    """The paths of `paths` that pytest's `output` says it could not collect, each under a conftest that failed to
    import or itself a module that did -> what failed and its error's last line."""
    rootdir = re.search(r"^rootdir: (.+?)(?:, |$)", output, re.MULTILINE)  # what "ERROR collecting X" is relative to
    broken: dict[Path, str] = {}
    for match in UNCOLLECTED.finditer(output):
        error = re.search(r"^E +(.+)$", output[match.end():], re.MULTILINE)
        where = Path(match["conftest"] or Path(rootdir[1] if rootdir else ROOT) / match["module"]).resolve()
        said = error[1].strip() if error else "an error (gpu-check.log)"
        broken[where] = f"{where.relative_to(ROOT) if where.is_relative_to(ROOT) else where}: {said}" \
            if match["conftest"] else said
    found = {}
    for path in paths:
        full = (ROOT / path).resolve()
        for where, why in broken.items():
            if full == where or (where.name == "conftest.py" and full.is_relative_to(where.parent)):
                found[path] = why
    return found


def cuda_tests_step(check: Check, paths: list[str]) -> dict:
    left_out = left_out_folders() if paths == ["auto"] else {}
    paths = [p for p in cuda_test_files() if not any(p.startswith(f"{folder}/") for folder in left_out)] \
        if paths == ["auto"] else paths
    xml, ends = check.work / "cuda-tests.xml", time.monotonic() + STEP_LIMITS["cuda-tests"]
    done = check.run("cuda-tests", pytest_argv(paths, xml), STEP_LIMITS["cuda-tests"])
    # one import error in a conftest or test module stops pytest before any test (exit 4 or 2): all 22 cuda tests
    #   went for one folder's. Once more without what it could not collect; the step fails, naming it
    broken = uncollected(done.stdout + done.stderr, paths) if done.returncode in (2, 4) else {}
    again = bool(broken) and len(broken) < len(paths)
    if again:
        paths = [p for p in paths if p not in broken]
        done = check.run("cuda-tests again", pytest_argv(paths, xml), max(1.0, ends - time.monotonic()))
    tests, running = pytest_outcomes(done.stdout)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    skips = [f"{node}: {reason}" for node, (outcome, reason) in tests.items() if outcome in ("SKIPPED", "XFAIL")]
    if xml.is_file():
        root = ElementTree.parse(xml).getroot()
        for suite in root.iter("testsuite"):
            for key in counts:
                counts[key] += int(suite.get(key, 0))
        skips = [f"{case.get('classname')}::{case.get('name')}: {skip.get('message', '')}"  # the reasons in full
                 for case in root.iter("testcase") for skip in case.iter("skipped")]
    else:  # stopped before its session's end: the outcomes it wrote as each test ended
        kinds = [outcome for outcome, _ in tests.values()]
        counts = {"tests": len(kinds), "failures": kinds.count("FAILED"), "errors": kinds.count("ERROR"),
                  "skipped": kinds.count("SKIPPED") + kinds.count("XFAIL")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    ok = done.returncode in (0, 5) and not counts["failures"] and not counts["errors"]  # 5: none collected
    failed = [node for node, (outcome, _) in tests.items() if outcome in ("FAILED", "ERROR")]
    error = None if ok else f"pytest exit {done.returncode}" + (f"; failed: {', '.join(failed)}" if failed else "") + (
        f"; stopped while {running} ran" if done.returncode == 124 and running else "")
    if broken:
        check.failed = True  # the step's own failure, whatever the budget cut
        said = (f"pytest could not collect {', '.join(broken)} ({'; '.join(sorted(set(broken.values())))})"
                + ("; the others ran without them" if again else ""))
        ok, error = False, f"{said}; {error}" if error else said
    # on the CPU they skip, as they should; on a GPU none has a reason to (each needs only torch and a GPU, the
    #   fixtures they use tiny random models and tone clips): a skip there, or none run, proves nothing
    if check.device != "cpu" and (counts["skipped"] or not (counts["passed"] or done.cut)):
        check.failed = True  # the step's own failure, whatever the budget cut
        what = (f"no cuda test ran on the GPU ({counts['skipped']} skipped of {counts['tests']} collected)"
                if not counts["passed"] else f"{counts['skipped']} cuda test(s) skipped on the GPU")
        ok, error = False, "; ".join([what + (": " + "; ".join(skips) if skips else ""), *([error] if error else [])])
    result = {"ok": ok, **counts, "files": paths}
    extra = {"left_out": left_out, "uncollected": broken, "skips": skips, "failed_tests": failed,
             "running_when_stopped": done.returncode == 124 and running,
             "counted_from": not xml.is_file() and "gpu-check.log (pytest ended before writing its junit XML)",
             "error": error}
    return result | {k: v for k, v in extra.items() if v}
