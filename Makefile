# mosquitto-eventhook
#
#   make            build build/mosquitto_eventhook.so
#   make demo       build and run a broker with the plugin, show events live
#   make check      unit and integration tests (installs missing Debian packages when root)
#   make check-asan the same with AddressSanitizer + UndefinedBehaviorSanitizer
#   make check-tsan the ring and sink unit tests under ThreadSanitizer
#   make docs       regenerate the option reference in docs/configuration.md
#   make fuzz       run each libFuzzer target for FUZZ_SECONDS (needs clang)
#   make soak       all sinks under churn for SOAK_SECONDS (default 3600; not in make check)
#   make check-valgrind  the broker under valgrind memcheck through every sink
#   make check-capture-cost  no allocation per event, under 1,000 instructions per event (callgrind)
#
# CFLAGS / LDFLAGS are yours (packagers: dpkg-buildflags, rpm optflags);
# the project's own flags are added separately.

CC ?= gcc
CFLAGS ?= -O2 -g
LDFLAGS ?=
PKG_CONFIG ?= pkg-config
PYTHON ?= /usr/bin/python3
SANITIZER ?=
BUILD ?= build

PKGS := jansson libcurl rdkafka
# HMAC-SHA256 for webhook signatures (http sink); libssl-dev comes with libcurl4-openssl-dev.
PKGS += libcrypto
EH_CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fPIC -fvisibility=hidden \
	-Iplugin -Isinks $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
# paho.mqtt.c has no .pc file on Debian 12. libcurl is compiled against but
# not linked: the first http sink loads it (sinks/http/eh_curl.h), so that a
# broker without one does not carry it and the libraries it brings.
EH_LIBS := $(shell $(PKG_CONFIG) --libs $(filter-out libcurl,$(PKGS)) 2>/dev/null) -lpaho-mqtt3as -lpthread -ldl
ifneq ($(SANITIZER),)
EH_CFLAGS += -fsanitize=$(SANITIZER) -fno-omit-frame-pointer -fno-sanitize-recover=all
EH_LDSAN := -fsanitize=$(SANITIZER)
endif

CORE_SRC := plugin/eh_ring.c plugin/eh_event.c plugin/eh_json.c plugin/eh_json_write.c plugin/eh_options.c plugin/eh_filter.c \
	plugin/eh_template.c plugin/eh_runner.c plugin/eh_fanout.c plugin/eh_core.c plugin/eh_clients.c plugin/eh_scope.c \
	plugin/eh_optwatch.c plugin/eh_capture.c plugin/eh_logtext.c plugin/eh_thread.c
# Every .c under sinks/ is a sink (or part of one); the registry is sinks/eh_sinks.c.
SINK_SRC := $(sort $(wildcard sinks/*.c sinks/*/*.c))
LIB_SRC := $(CORE_SRC) $(SINK_SRC)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
PLUGIN := $(BUILD)/mosquitto_eventhook.so
HEADERS := $(wildcard plugin/*.h sinks/*.h sinks/*/*.h)

UNIT_SRC := $(wildcard test/unit/test_*.c)
UNIT_BIN := $(BUILD)/test/unit_tests
# Test peers: programs the integration tests run (one line each).
PEERS := $(BUILD)/test/kafka_peer
OPTDOC := $(BUILD)/eh_optdoc

# Fuzz targets: test/fuzz/fuzz_<name>.c, seeds in test/fuzz/corpus/<name>/.
# make check replays the seeds through gcc-built binaries; make fuzz runs
# libFuzzer (clang) on each target for FUZZ_SECONDS.
FUZZ_TARGETS := $(patsubst test/fuzz/fuzz_%.c,%,$(wildcard test/fuzz/fuzz_*.c))
FUZZ_REPLAY := $(FUZZ_TARGETS:%=$(BUILD)/test/replay_%)
FUZZ_SECONDS ?= 60

# Debian packages the build and the tests need; installed when missing.
# One per line, so that each sink's additions merge cleanly.
# libc6-dev: only a recommendation of gcc, and deps.sh installs without those.
DEB_DEPS := gcc libc6-dev make pkg-config
DEB_DEPS += mosquitto mosquitto-clients mosquitto-dev libmosquitto-dev
DEB_DEPS += libjansson-dev libcurl4-openssl-dev librdkafka-dev libpaho-mqtt-dev
DEB_DEPS += check python3 python3-paho-mqtt
DEB_DEPS += openssl
DEB_DEPS += libssl-dev
DEB_DEPS += valgrind

# Only for make fuzz (not make check): clang and its libFuzzer runtime,
# which Debian 12 ships in a package clang only recommends.
FUZZ_DEB_DEPS := clang
FUZZ_DEB_DEPS += libclang-rt-14-dev

.PHONY: soak check-valgrind
.PHONY: all deps demo check check-unit check-integration check-docs check-exports check-asan check-tsan docs clean \
	fuzz fuzz-bins check-fuzz-replay

all: $(PLUGIN)

$(BUILD)/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(EH_CFLAGS) -c -o $@ $<

$(BUILD)/plugin/eh_plugin.o: plugin/eh_plugin.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(EH_CFLAGS) -c -o $@ $<

$(PLUGIN): $(LIB_OBJ) $(BUILD)/plugin/eh_plugin.o
	$(CC) -shared -Wl,--as-needed $(CFLAGS) $(LDFLAGS) $(EH_LDSAN) \
		-o $@ $^ $(EH_LIBS)

# The broker stub lets unit tests and the doc generator link the core
# without a broker.
$(BUILD)/test/broker_stub.o: test/unit/broker_stub.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(EH_CFLAGS) -c -o $@ $<

$(OPTDOC): plugin/eh_optdoc.c $(LIB_OBJ) $(BUILD)/test/broker_stub.o
	$(CC) $(CPPFLAGS) $(CFLAGS) $(EH_CFLAGS) $(LDFLAGS) $(EH_LDSAN) -o $@ $^ $(EH_LIBS)

# --wrap: the objects' malloc, calloc and realloc calls go through wrappers
# in test/unit/test_no_memory.c, which make a chosen sink thread's
# allocations fail. Only this link has them; the plugin calls libc.
UNIT_WRAP := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc
$(UNIT_BIN): $(UNIT_SRC) test/unit/unit_main.c $(LIB_OBJ) $(BUILD)/test/broker_stub.o test/unit/unit.h
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(EH_CFLAGS) -Itest/unit $(LDFLAGS) $(EH_LDSAN) $(UNIT_WRAP) -o $@ $(UNIT_SRC) \
		test/unit/unit_main.c $(LIB_OBJ) $(BUILD)/test/broker_stub.o $(EH_LIBS) $$($(PKG_CONFIG) --libs check)

$(BUILD)/test/replay_%: test/fuzz/fuzz_%.c test/fuzz/replay_main.c test/fuzz/fuzz.h $(LIB_OBJ) $(BUILD)/test/broker_stub.o
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(EH_CFLAGS) -Itest/fuzz $(LDFLAGS) $(EH_LDSAN) -o $@ test/fuzz/fuzz_$*.c \
		test/fuzz/replay_main.c $(LIB_OBJ) $(BUILD)/test/broker_stub.o $(EH_LIBS)

$(BUILD)/test/fuzz_%: test/fuzz/fuzz_%.c test/fuzz/fuzz.h $(LIB_OBJ) $(BUILD)/test/broker_stub.o
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(EH_CFLAGS) -Itest/fuzz -fsanitize=fuzzer $(LDFLAGS) $(EH_LDSAN) -o $@ \
		test/fuzz/fuzz_$*.c $(LIB_OBJ) $(BUILD)/test/broker_stub.o $(EH_LIBS)

fuzz-bins: $(FUZZ_TARGETS:%=$(BUILD)/test/fuzz_%)

check-fuzz-replay: $(FUZZ_REPLAY)
	for t in $(FUZZ_TARGETS); do $(BUILD)/test/replay_$$t test/fuzz/corpus/$$t || exit 1; done

# New inputs go to build-fuzz/corpus/<target>/; copy the interesting ones
# into test/fuzz/corpus/<target>/ by hand (keep the committed seeds small).
fuzz:
	@sh test/deps.sh $(FUZZ_DEB_DEPS)
	$(MAKE) BUILD=build-fuzz CC=clang SANITIZER=address,undefined \
		CFLAGS="-O1 -g -fsanitize=fuzzer-no-link" fuzz-bins
	for t in $(FUZZ_TARGETS); do \
		mkdir -p build-fuzz/corpus/$$t && \
		build-fuzz/test/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -max_len=4096 \
			build-fuzz/corpus/$$t test/fuzz/corpus/$$t || exit 1; \
	done

$(BUILD)/test/kafka_peer: test/kafka_peer.c sinks/eh_sink_kafka.h
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror $(LDFLAGS) $(EH_LDSAN) -o $@ $< \
		$$($(PKG_CONFIG) --cflags --libs rdkafka jansson)

deps:
	@sh test/deps.sh $(DEB_DEPS)

demo: deps
	$(MAKE) all
	sh conf/demo.sh $(PLUGIN)

docs: $(OPTDOC)
	$(PYTHON) docs/gen_reference.py $(OPTDOC)

check-docs: $(OPTDOC)
	$(PYTHON) docs/gen_reference.py --check $(OPTDOC)

check-exports: $(PLUGIN)
	sh test/check_exports.sh $(PLUGIN)

check-unit: $(UNIT_BIN)
	CK_DEFAULT_TIMEOUT=120 $(UNIT_BIN)

check-integration: $(PLUGIN) $(PEERS)
	EH_PLUGIN=$(abspath $(PLUGIN)) $(PYTHON) test/run.py $(TESTS)

check: deps
	$(MAKE) all $(UNIT_BIN) $(OPTDOC) $(PEERS) $(FUZZ_REPLAY) $(LOADGEN)
	@BUILD=$(BUILD) PYTHON=$(PYTHON) MAKE="$(MAKE)" FUZZ_TARGETS="$(FUZZ_TARGETS)" sh test/check_all.sh

check-asan: deps
	$(MAKE) BUILD=build-asan SANITIZER=address,undefined CFLAGS="-O1 -g" all build-asan/test/unit_tests build-asan/test/kafka_peer
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 CK_DEFAULT_TIMEOUT=120 build-asan/test/unit_tests
	EH_PLUGIN=$(abspath build-asan/mosquitto_eventhook.so) \
	EH_BROKER_PRELOAD="$$(gcc -print-file-name=libasan.so):$$(gcc -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	$(PYTHON) test/run.py $(TESTS)

check-tsan: deps
	$(MAKE) BUILD=build-tsan SANITIZER=thread CFLAGS="-O1 -g" build-tsan/test/unit_tests
	TSAN_OPTIONS=halt_on_error=1 CK_FORK=no build-tsan/test/unit_tests

clean:
	rm -rf build build-asan build-tsan build-fuzz build-dev packaging/out

# ---- Packages: make deb, make rpm, make check-packages (docs/packaging.md).
# Output in packaging/out/. The Debian packages that building and checking
# the packages needs, on top of DEB_DEPS:
DEB_DEPS_PKG := build-essential debhelper dpkg-dev lintian man-db
DEB_DEPS_PKG += rpm rpmlint debugedit elfutils cpio
DEB_DEPS_PKG += debootstrap binutils

.PHONY: deb rpm check-packages deps-packages

# On Debian only: elsewhere (make rpm on Fedora) the build requirements are
# the spec's BuildRequires.
deps-packages:
	@if command -v dpkg-query >/dev/null; then sh test/deps.sh $(DEB_DEPS) $(DEB_DEPS_PKG); fi

deb: deps-packages
	bash packaging/build-deb.sh

rpm: deps-packages
	bash packaging/build-rpm.sh

check-packages: deps-packages
	PYTHON=$(PYTHON) bash test/packages/check_packages.sh

# ---- benchmarks: `make bench` (never part of `make check`; numbers are
# reported, no test fails on timing). bench/run.sh runs the core's
# measurements (throughput with and without the plugin, callgrind
# instruction counts, latency, wake-ups, memory, stop time) and then every
# bench/bench_*.sh and bench/bench_*.py (docs/performance.md).
BENCH_DEPS := valgrind util-linux linux-perf strace
LOADGEN := $(BUILD)/bench/loadgen
KAFKA_LATENCY := $(BUILD)/bench/kafka_latency
.PHONY: bench
$(LOADGEN): bench/loadgen.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror $(LDFLAGS) -o $@ $<
$(KAFKA_LATENCY): bench/kafka_latency.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror $(LDFLAGS) -o $@ $< \
		$$($(PKG_CONFIG) --cflags --libs rdkafka)
bench: deps
	@sh test/deps.sh $(BENCH_DEPS)
	$(MAKE) all $(LOADGEN) $(KAFKA_LATENCY) $(PEERS)
	BUILD=$(BUILD) sh bench/run.sh
# The MQTT sink's baseline: paho.mqtt.c's own publisher (bench/bench_mqtt.sh).
MQTT_BASELINE := $(BUILD)/bench/mqtt_baseline
$(MQTT_BASELINE): bench/mqtt_baseline.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror $(LDFLAGS) -o $@ $< -lpaho-mqtt3as -lpthread
bench: $(MQTT_BASELINE)
# A plugin that registers nothing but links the plugin's libraries
# (bench/throughput.py, BENCH_LIBS=1): what loading them costs the broker;
# with plugin_opt_thread, what one idle thread costs it (bench/paired_cpu.py).
# The second links libcurl alone: what the http sink's loading it costs.
NULL_PLUGIN := $(BUILD)/bench/null_plugin.so
NULL_PLUGIN_CURL := $(BUILD)/bench/null_plugin_curl.so
$(NULL_PLUGIN): bench/null_plugin.c Makefile | deps
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -std=c11 -Wall -Wextra -Werror -fPIC -shared $(LDFLAGS) -o $@ $< \
		-Wl,--no-as-needed $(EH_LIBS)
$(NULL_PLUGIN_CURL): bench/null_plugin.c Makefile | deps
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -std=c11 -Wall -Wextra -Werror -fPIC -shared $(LDFLAGS) -o $@ $< \
		-Wl,--no-as-needed $$($(PKG_CONFIG) --libs libcurl) -lpthread
bench: $(NULL_PLUGIN) $(NULL_PLUGIN_CURL)
# The per-event JSON writer alone (bench/json_bench.c): ns per event, then
# instructions per event from callgrind, counted only inside
# eh_json_write_event. A few seconds; part of make bench.
JSON_BENCH := $(BUILD)/bench/json_bench
JSON_BENCH_OBJ := $(BUILD)/plugin/eh_json.o $(BUILD)/plugin/eh_json_write.o $(BUILD)/plugin/eh_event.o
.PHONY: json-bench
$(JSON_BENCH): bench/json_bench.c $(JSON_BENCH_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(EH_CFLAGS) $(LDFLAGS) -o $@ $^ $$($(PKG_CONFIG) --libs jansson)
json-bench: $(JSON_BENCH)
	$(JSON_BENCH)
	@command -v valgrind >/dev/null || { echo "json-bench: no valgrind, no instruction counts"; exit 0; }; \
	out=$$(mktemp -d /tmp/eh-json-bench.XXXXXX) && \
	for mix in publish lifecycle mixed; do \
		valgrind --tool=callgrind --toggle-collect=eh_json_write_event --callgrind-out-file=$$out/cg \
			$(JSON_BENCH) 40960 1 $$mix >/dev/null 2>&1 || { rm -rf $$out; exit 1; }; \
		awk -v m=$$mix '/^totals:/ { printf "%-9s %8.1f instructions/event (callgrind)\n", m, $$2 / 40960 }' $$out/cg; \
	done; rm -rf $$out
bench: json-bench

# ---- Reliability (docs/reliability.md).
SOAK_SECONDS ?= 3600

# valgrind memcheck of the real broker with the plugin through every sink
# (test/valgrind/run.py); leaks inside the broker's libraries are
# suppressed in test/valgrind/mosquitto.supp, never a frame of ours.
check-valgrind: deps
	$(MAKE) all $(PEERS)
	EH_PLUGIN=$(abspath $(PLUGIN)) $(PYTHON) test/valgrind/run.py

# Issue 7's counted targets on the broker thread, from callgrind: the
# capture path allocates nothing per event and costs under 1,000
# instructions per event (test/valgrind/capture_cost.py). Counts, not
# times: part of make check.
.PHONY: check-capture-cost
check-capture-cost: deps
	$(MAKE) all $(LOADGEN)
	BUILD=$(BUILD) $(PYTHON) test/valgrind/capture_cost.py

soak: deps
	$(MAKE) all $(PEERS)
	EH_PLUGIN=$(abspath $(PLUGIN)) SOAK_SECONDS=$(SOAK_SECONDS) $(PYTHON) test/soak.py
