#!/usr/bin/python3
"""Run the integration tests (test/integration/test_*.py, standard unittest).

    /usr/bin/python3 test/run.py                      # everything
    /usr/bin/python3 test/run.py transparency         # tests whose id contains a word
    /usr/bin/python3 test/run.py test_harness_selfcheck.SelfCheck.test_free_port

A test is selected when its id (module.Class.method) contains any of the
arguments.  Each test's outcome and duration is printed as it finishes; the
last line is always

    integration: N passed, N failed, N skipped

counting tests (a test with a failing subtest counts once, as failed; errors
count as failed).  The exit status is 0 only if nothing failed.
"""

import sys
import time
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
INTEGRATION = HERE / "integration"


class _Result(unittest.TextTestResult):
    """Tracks one outcome per test id, whatever its subtests did."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outcomes = {}
        self._started = {}

    def _mark(self, test, outcome):
        test_id = getattr(test, "test_case", test).id()
        previous = self.outcomes.get(test_id)
        # "failed" wins over everything, then "skipped" over "passed" only if
        # nothing in the test passed on its own.
        if previous == "failed":
            return
        self.outcomes[test_id] = outcome

    def startTest(self, test):
        self._started[test.id()] = time.monotonic()
        super().startTest(test)

    def stopTest(self, test):
        super().stopTest(test)
        test_id = test.id()
        self.outcomes.setdefault(test_id, "passed")
        elapsed = time.monotonic() - self._started.pop(test_id, time.monotonic())
        self.stream.writeln(f"  -> {self.outcomes[test_id].upper()} {test_id} ({elapsed:.1f}s)")
        self.stream.flush()

    def addSuccess(self, test):
        super().addSuccess(test)
        self._mark(test, "passed")

    def addError(self, test, err):
        super().addError(test, err)
        self._mark(test, "failed")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._mark(test, "failed")

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._mark(test, "skipped")

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._mark(test, "passed")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._mark(test, "failed")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self.outcomes[test.id()] = "failed"


def _flatten(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from _flatten(item)
        else:
            yield item


def main(argv):
    sys.path.insert(0, str(INTEGRATION))
    loader = unittest.TestLoader()
    discovered = loader.discover(str(INTEGRATION), pattern="test_*.py",
                                 top_level_dir=str(INTEGRATION))
    tests = list(_flatten(discovered))
    names = argv[1:]
    if names:
        unmatched = [n for n in names if not any(n in t.id() for t in tests)]
        if unmatched:
            print(f"run.py: no test id contains {', '.join(unmatched)}", file=sys.stderr)
            print("integration: 0 passed, 1 failed, 0 skipped")
            return 2
        tests = [t for t in tests if any(n in t.id() for n in names)]

    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2, resultclass=_Result)
    started = time.monotonic()
    result = runner.run(unittest.TestSuite(tests))
    outcomes = list(result.outcomes.values())
    # An error outside any test (setUpClass, a module that fails to import)
    # reaches addError under its own id, so it is counted as a failed test.
    passed = outcomes.count("passed")
    failed = outcomes.count("failed")
    skipped = outcomes.count("skipped")
    print(f"elapsed: {time.monotonic() - started:.1f}s")
    print(f"integration: {passed} passed, {failed} failed, {skipped} skipped")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
