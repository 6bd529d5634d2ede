"""The two test tiers (tests/conftest.py): `make test` and `make test-slow`, which CI runs after it."""

from types import SimpleNamespace

import pytest

from ordering import longest_first


def test_every_test_needing_comets_environment_is_in_the_slow_tier(request):
    """COMET's environment (a ~2-minute install) is made only by the slow tier: a test that needs it is marked slow,
    so `make test` (`-m 'not slow'`) never selects one. Were the mark missing, such a test would be selected here."""
    needing = [item for item in request.session.items if "comet_python" in getattr(item, "fixturenames", ())]
    assert all(item.get_closest_marker("slow") for item in needing), [i.nodeid for i in needing]
    if "not slow" in request.config.getoption("markexpr"):
        assert not needing


def test_long_tests_run_first_and_modules_stay_together():
    class Item:
        def __init__(self, module, name, seconds=None):
            self.module = SimpleNamespace(__name__=module)
            self.nodeid = f"{module}::{name}"
            self.seconds = seconds

        def get_closest_marker(self, name):
            return pytest.mark.long(self.seconds).mark if name == "long" and self.seconds else None

    items = [Item("a", "1"), Item("a", "2", 10), Item("b", "1", 30), Item("b", "2"), Item("c", "1", 5),
             Item("a", "3", 25)]
    longest_first(items)
    assert [i.nodeid for i in items] == ["a::3", "a::2", "a::1", "b::1", "b::2", "c::1"]  # a: 35 s, b: 30 s, c: 5 s


def test_every_make_target_running_pytest_bounds_each_test():
    """A test that hangs (ranks waiting on a peer that never comes: a file-store group gloo never times out) fails
    after the Makefile's --timeout with its stack (pytest-timeout, a dev dependency), not CI at its 90-minute limit."""
    from pathlib import Path

    import pytest_timeout  # noqa: F401  (installed by make setup: the flag below needs it)

    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    runs = [line for line in makefile.splitlines() if line.startswith("\t") and "bin/pytest" in line]
    assert len(runs) >= 3, runs  # test, test-slow, test-all
    assert all("--timeout $(" in line for line in runs), runs
