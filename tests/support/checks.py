"""Named pass/fail checks for the Python checkers of process tests: each prints ok or FAIL with
its name, and the checker exits non-zero when any failed (tests/monitor/metrics_e2e_check.py,
tests/faults/chaos_check.py)."""


class Checks:
    def __init__(self):
        self.failures = 0

    def check(self, name, passed, detail=""):
        print(f"{'ok' if passed else 'FAIL'}: {name}{' (' + detail + ')' if detail else ''}")
        if not passed:
            self.failures += 1

    def equal(self, name, actual, expected):
        self.check(name, actual == expected, f"{actual} == {expected}")
