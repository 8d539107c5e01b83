# mosquitto-eventhook
#
#   make            build build/mosquitto_eventhook.so
#   make demo       build and run a broker with the plugin, show events live
#   make check      unit and integration tests (installs missing Debian packages when root)
#   make check-asan the same with AddressSanitizer + UndefinedBehaviorSanitizer
#   make check-tsan the ring and sink unit tests under ThreadSanitizer
#   make docs       regenerate the option reference in docs/configuration.md
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
EH_CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fPIC -fvisibility=hidden \
	-Iplugin -Isinks $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
# paho.mqtt.c has no .pc file on Debian 12.
EH_LIBS := $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null) -lpaho-mqtt3as -lpthread -ldl
ifneq ($(SANITIZER),)
EH_CFLAGS += -fsanitize=$(SANITIZER) -fno-omit-frame-pointer -fno-sanitize-recover=all
EH_LDSAN := -fsanitize=$(SANITIZER)
endif

CORE_SRC := plugin/eh_ring.c plugin/eh_event.c plugin/eh_json.c plugin/eh_options.c plugin/eh_filter.c \
	plugin/eh_template.c plugin/eh_runner.c plugin/eh_core.c plugin/eh_clients.c plugin/eh_scope.c \
	plugin/eh_capture.c
# Every .c under sinks/ is a sink (or part of one); the registry is sinks/eh_sinks.c.
SINK_SRC := $(sort $(wildcard sinks/*.c sinks/*/*.c))
LIB_SRC := $(CORE_SRC) $(SINK_SRC)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
PLUGIN := $(BUILD)/mosquitto_eventhook.so
HEADERS := $(wildcard plugin/*.h sinks/*.h sinks/*/*.h)

UNIT_SRC := $(wildcard test/unit/test_*.c)
UNIT_BIN := $(BUILD)/test/unit_tests
OPTDOC := $(BUILD)/eh_optdoc

# Debian packages the build and the tests need; installed when missing.
# One per line, so that each sink's additions merge cleanly.
DEB_DEPS := gcc make pkg-config
DEB_DEPS += mosquitto mosquitto-clients mosquitto-dev libmosquitto-dev
DEB_DEPS += libjansson-dev libcurl4-openssl-dev librdkafka-dev libpaho-mqtt-dev
DEB_DEPS += check python3 python3-paho-mqtt
DEB_DEPS += openssl

.PHONY: all deps demo check check-unit check-integration check-docs check-exports check-asan check-tsan docs clean

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

$(UNIT_BIN): $(UNIT_SRC) test/unit/unit_main.c $(LIB_OBJ) $(BUILD)/test/broker_stub.o test/unit/unit.h
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(EH_CFLAGS) -Itest/unit $(LDFLAGS) $(EH_LDSAN) -o $@ $(UNIT_SRC) test/unit/unit_main.c $(LIB_OBJ) \
		$(BUILD)/test/broker_stub.o $(EH_LIBS) $$($(PKG_CONFIG) --libs check)

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

check-integration: $(PLUGIN)
	EH_PLUGIN=$(abspath $(PLUGIN)) $(PYTHON) test/run.py $(TESTS)

check: deps
	$(MAKE) all $(UNIT_BIN) $(OPTDOC)
	@BUILD=$(BUILD) PYTHON=$(PYTHON) sh test/check_all.sh

check-asan: deps
	$(MAKE) BUILD=build-asan SANITIZER=address,undefined CFLAGS="-O1 -g" all build-asan/test/unit_tests
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 build-asan/test/unit_tests
	EH_PLUGIN=$(abspath build-asan/mosquitto_eventhook.so) \
	EH_BROKER_PRELOAD="$$(gcc -print-file-name=libasan.so):$$(gcc -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	$(PYTHON) test/run.py $(TESTS)

check-tsan: deps
	$(MAKE) BUILD=build-tsan SANITIZER=thread CFLAGS="-O1 -g" build-tsan/test/unit_tests
	TSAN_OPTIONS=halt_on_error=1 CK_FORK=no build-tsan/test/unit_tests

clean:
	rm -rf build build-asan build-tsan

# ---- benchmarks: `make bench` (never part of `make check`; numbers are
# reported, no test fails on timing). bench/run.sh runs the core's
# measurements (throughput with and without the plugin, callgrind
# instruction counts, latency, memory) and then every bench/bench_*.sh.
BENCH_DEPS := valgrind util-linux
LOADGEN := $(BUILD)/bench/loadgen
.PHONY: bench
$(LOADGEN): bench/loadgen.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror $(LDFLAGS) -o $@ $<
bench: deps
	@sh test/deps.sh $(BENCH_DEPS)
	$(MAKE) all $(LOADGEN)
	BUILD=$(BUILD) sh bench/run.sh
