"""The order in which the tests run (tests/conftest.py orders them with it; tests/test_tiers.py checks it)."""


def longest_first(items: list) -> None:
    """Order the tests so that the test workers end together: modules by the seconds their `long(seconds)` tests
    take, most first, and within a module its long tests first, longest first; the rest keep their order. A worker
    that drew the suite's last long tests ran on alone for 140 s of a 620 s run before (2026-12-04). Each module's
    tests stay together, so a module's fixtures are set up once per worker as before."""
    def seconds(item) -> float:
        mark = item.get_closest_marker("long")
        return float(mark.args[0]) if mark else 0.0

    modules: dict = {}
    for index, item in enumerate(items):
        modules.setdefault(item.module.__name__ if item.module else item.nodeid, []).append((index, item))
    weight = {name: sum(seconds(item) for _, item in tests) for name, tests in modules.items()}
    order = sorted(modules, key=lambda name: (-weight[name], modules[name][0][0]))
    items[:] = [item for name in order for _, item in sorted(modules[name], key=lambda t: (-seconds(t[1]), t[0]))]
