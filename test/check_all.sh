#!/bin/sh
# Runs every check of `make check` in turn and prints one closing line with
# the totals, so a failure anywhere is visible at the end.
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
passed=0
failed=0
run() {
	name=$1
	shift
	echo "== $name"
	if "$@"; then
		passed=$((passed + 1))
	else
		echo "== $name: FAILED"
		failed=$((failed + 1))
	fi
}
run "exported symbols" sh test/check_exports.sh "$BUILD/mosquitto_eventhook.so"
run "option reference is current" "$PYTHON" docs/gen_reference.py --check "$BUILD/eh_optdoc"
run "unit tests (Check)" env CK_DEFAULT_TIMEOUT=120 "$BUILD/test/unit_tests"
for t in $FUZZ_TARGETS; do
	run "fuzz corpus replay: $t" "$BUILD/test/replay_$t" "test/fuzz/corpus/$t"
done
run "integration tests" env EH_PLUGIN="$(pwd)/$BUILD/mosquitto_eventhook.so" "$PYTHON" test/run.py
run "capture cost: no allocation per event, under 1,000 instructions (callgrind)" \
	env BUILD="$BUILD" "$PYTHON" test/valgrind/capture_cost.py
# The same suite again with the plugin under the sanitizers, the ring and
# runner under ThreadSanitizer, and the packages. EH_CHECK_QUICK=1 skips
# them for a fast edit-test loop; CI always runs them.
if [ -z "${EH_CHECK_QUICK:-}" ]; then
	run "sanitizers: ASan + UBSan, unit and integration" ${MAKE:-make} -s check-asan
	run "sanitizers: ThreadSanitizer, ring and runner" ${MAKE:-make} -s check-tsan
	run "valgrind: the broker with every sink under memcheck" ${MAKE:-make} -s check-valgrind
	run "packages: deb and rpm built, linted, installed" ${MAKE:-make} -s check-packages
fi
echo "check groups: $passed passed, $failed failed"
[ "$failed" = 0 ]
