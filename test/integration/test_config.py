"""Configuration handling against the real broker: which mistakes stop it at
start and with exactly what message, how values are read, what the plugin
says at start about limits of the broker it runs in, and what a SIGHUP does
with changed plugin_opt_ lines.

Refusals are checked by running the broker in the foreground on a config
that must not start and reading what it logged and printed.
"""
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from eh_harness import (MOSQUITTO, TIMEOUT, Broker, BrokerTestCase,  # noqa: E402
                        RawClient, require_plugin, wait_events, wait_until)

ERR = "eventhook: configuration error: "


class ConfigTestCase(BrokerTestCase):
    def run_bad(self, opts, conf=("allow_anonymous true",), **kwargs):
        """Runs a broker that must refuse to start; returns its exit status
        and everything it said."""
        b = Broker(list(conf), start=False, plugin_opts=opts, name="bad", **kwargs)
        self.add_broker(b)
        b.write_config()
        env = dict(os.environ)
        if os.environ.get("EH_BROKER_PRELOAD"):
            env["LD_PRELOAD"] = os.environ["EH_BROKER_PRELOAD"]
        try:
            proc = subprocess.run([MOSQUITTO, "-c", str(b.conf_path)], capture_output=True, text=True,
                                  timeout=TIMEOUT, env=env, errors="replace")
        except subprocess.TimeoutExpired:
            self.fail(f"broker started with bad options {opts}")
        return proc.returncode, b.log() + proc.stdout + proc.stderr

    def assert_refused(self, opts, message, **kwargs):
        rc, text = self.run_bad(opts, **kwargs)
        self.assertNotEqual(rc, 0, text)
        self.assertIn(message, text)
        return text


class ConfigFileTest(ConfigTestCase):
    """D8: an explicit plugin_opt_config_file that cannot be read."""

    def test_missing_config_file_stops_the_broker(self):
        self.assert_refused([("file_path", "{dir}/ev.jsonl"), ("config_file", "/nonexistent-eh/x.conf")],
                            ERR + "plugin_opt_config_file: cannot read '/nonexistent-eh/x.conf': "
                            "No such file or directory")

    def test_directory_as_config_file_stops_the_broker(self):
        rc, text = self.run_bad([("file_path", "{dir}/ev.jsonl"), ("config_file", "{dir}")])
        self.assertNotEqual(rc, 0, text)
        self.assertRegex(text, ERR + r"plugin_opt_config_file: cannot read '/[^']*eh-bad-[^']*': "
                         r"Is a directory")

    def test_readable_config_file_starts(self):
        b = self.start_broker(["allow_anonymous true"],
                              plugin_opts=[("file_path", "{dir}/ev.jsonl"),
                                           ("config_file", "{dir}/mosquitto.conf")])
        self.assertNotIn("cannot read", b.log())

    def test_two_config_files_observed_as_unknown(self):
        """mosquitto -c a.conf -c b.conf reads both into one configuration:
        the last file alone cannot tell which security providers exist, so
        the capture keeps to what needs no such knowledge, and says why."""
        b = TwoConfigFilesBroker(["allow_anonymous true"], start=False, name="two-c",
                                 plugin_opts=[("file_path", "{dir}/ev.jsonl")])
        self.add_broker(b)
        (b.dir / "more.conf").write_text("# read after mosquitto.conf, into the same configuration\n")
        b.start()
        self.assertIn("eventhook: the broker was started with 2 -c configuration files, which it reads into one "
                      "configuration; eventhook reads one (set plugin_opt_config_file to a file holding the whole "
                      "configuration); to keep every broker decision unchanged", b.log())
        c = RawClient(b.port, "two-c")
        self.assertEqual(c.connect().rc, 0)
        c.disconnect()
        events = wait_events(b.path("ev.jsonl"), lambda evs: any(e["event"] == "client.disconnected" for e in evs))
        self.assertEqual([(e["event"], e.get("inferred", False)) for e in events if e.get("clientid") == "two-c"],
                         [("client.connected", True), ("client.disconnected", False)])


class TwoConfigFilesBroker(Broker):
    """The broker started as mosquitto -c mosquitto.conf -c more.conf."""

    def command(self):
        return super().command() + ["-c", str(self.dir / "more.conf")]



class SinkEventsTest(ConfigTestCase):
    """D9: a sink whose event list the global list cuts to nothing."""

    def test_file_sink_cut_to_nothing_stops_the_broker(self):
        self.assert_refused([("file_path", "{dir}/ev.jsonl"), ("events", "client.*"),
                             ("file_events", "message.publish")],
                            ERR + "plugin_opt_file_events: none of 'message.publish' is in plugin_opt_events "
                            "('client.*'), so the file sink would never receive an event")

    def test_local_sink_cut_to_nothing_stops_the_broker_cleanly(self):
        # The local sink has a broker-thread hook: the refusal must not
        # call it on a sink that was never created.
        text = self.assert_refused([("local_topic", "ev/{event}"), ("events", "message.*"),
                                    ("local_events", "client.connect,client.disconnected")],
                                   ERR + "plugin_opt_local_events: none of 'client.connect,client.disconnected' "
                                   "is in plugin_opt_events ('message.*'), so the local sink would never "
                                   "receive an event")
        self.assertIn("Error: Plugin returned 3 when initialising.", text)
        # and no "stopped" counters for a sink that never existed
        self.assertNotIn("local: stopped", text)

    def test_overlap_starts(self):
        self.start_broker(["allow_anonymous true"],
                          plugin_opts=[("file_path", "{dir}/ev.jsonl"), ("events", "client.*"),
                                       ("file_events", "message.publish,client.connect")])


class LoadedTwiceTest(ConfigTestCase):
    """D7: two plugin lines for this plugin in one scope."""

    def test_two_plugin_lines_say_why(self):
        from eh_harness import plugin_path
        self.assert_refused([("file_path", "{dir}/one.jsonl")],
                            "eventhook: cannot register broker callbacks (error 31, already registered): the "
                            "plugin is loaded twice in the same scope (two plugin lines?); load it once and "
                            "configure every sink in that one plugin block (with per_listener_settings true, "
                            "once per listener)",
                            extra_plugins_after=[(plugin_path(), {"file_path": "{dir}/two.jsonl"})])

    def test_once_per_listener_starts(self):
        b = self.start_broker(["per_listener_settings true"], listeners=[["allow_anonymous true"]] * 2,
                              listener_plugin_opts=[{"file_path": "{dir}/a.jsonl"},
                                                    {"file_path": "{dir}/b.jsonl"}])
        self.assertEqual(b.log().count("sink(s)"), 2)


class BlanksTest(ConfigTestCase):
    """D4: trailing blanks are dropped from every value; a tab in a key is
    shown."""

    def test_trailing_blanks_dropped_from_every_value(self):
        b = self.start_broker(["allow_anonymous true"],
                              plugin_opts=[("file_path", "{dir}/ev.jsonl "), ("queue_size", "1024 "),
                                           ("file_fsync", "true\t"), ("node_id", "mynode \t ")])
        self.assertIn("started, node 'mynode', 1 sink(s)", b.log())
        c = RawClient(b.port, "blanks")
        self.assertEqual(c.connect().rc, 0)
        c.disconnect()
        events = wait_events(b.path("ev.jsonl"), lambda evs: any(e.get("clientid") == "blanks" for e in evs))
        self.assertEqual({e["node"] for e in events}, {"mynode"})
        self.assertFalse(os.path.exists(b.path("ev.jsonl ")))

    def test_tab_in_key_is_shown(self):
        self.assert_refused([("file_path", "{dir}/ev.jsonl"), ("queue_size\t", "1024")],
                            ERR + "plugin_opt_queue_size\\t: the key holds a tab: separate key and value with a "
                            "space")

    def test_tab_in_key_never_shows_what_follows(self):
        # A secret typed after a tab arrives inside the key: it must reach
        # neither the log nor librdkafka (which would quote it back).
        text = self.assert_refused([("kafka_brokers", "127.0.0.1:9"), ("kafka.sasl.password\tS3cr3t", "x")],
                                   ERR + "plugin_opt_kafka.sasl.password\\t<and 6 more bytes, not shown>: the "
                                   "key holds a tab")
        self.assertNotIn("S3cr3t", text)


class LongValuesTest(ConfigTestCase):
    """D5: a 100 KB key or value is quoted cut, so the reason stays in the
    line the broker logs (it cuts lines at about 1000 bytes)."""

    BIG = "a" * 102400
    SHOWN = "a" * 100 + "...(102400 bytes)"

    def test_long_int_value(self):
        self.assert_refused([("file_path", "{dir}/ev.jsonl"), ("queue_size", self.BIG)],
                            ERR + f"plugin_opt_queue_size: '{self.SHOWN}' is not a whole number from 16 to "
                            "16777216")

    def test_long_unknown_key(self):
        self.assert_refused([("file_path", "{dir}/ev.jsonl"), (self.BIG, "1")],
                            ERR + f"plugin_opt_{self.SHOWN}: unknown option (see docs/configuration.md")

    def test_long_events_item(self):
        self.assert_refused([("file_path", "{dir}/ev.jsonl"), ("events", self.BIG)],
                            ERR + f"plugin_opt_events: '{self.SHOWN}' is not an event type or pattern "
                            "(client.connect,")

    def test_long_template(self):
        self.assert_refused([("local_topic", "ev/" + self.BIG[3:] + "{nope}")],
                            "unknown placeholder '{nope}' in template "
                            f"'ev/{'a' * 97}...(102406 bytes)' (known: {{event}}")

    def test_long_config_file(self):
        self.assert_refused([("file_path", "{dir}/ev.jsonl"), ("config_file", "/" + self.BIG[1:])],
                            ERR + f"plugin_opt_config_file: cannot read '/{'a' * 99}...(102400 bytes)': "
                            "File name too long")

    def test_long_secret_file_path(self):
        self.assert_refused([("http_url", "http://127.0.0.1:9/"), ("http_bearer_token_file", "/" + self.BIG[1:])],
                            ERR + f"plugin_opt_http_bearer_token_file: cannot read '/{'a' * 99}...(102400 bytes)': "
                            "File name too long")

    def test_long_kafka_topic(self):
        self.assert_refused([("kafka_brokers", "127.0.0.1:9"), ("kafka_topic", self.BIG + "/")],
                            ERR + f"plugin_opt_kafka_topic: '{self.SHOWN[:100]}...(102401 bytes)' holds '/'; "
                            "Kafka topic names hold only a-z A-Z 0-9 . _ -")


TICK_WARNING = ("eventhook: per_listener_settings is true, and Mosquitto 2.0.11 to 2.0.14 then never call the "
                "plugin's TICK callback: {what}and log lines from sink threads only move when a client of this "
                "listener connects, subscribes, publishes or disconnects; a quiet listener holds them back "
                "(docs/sinks/local.md)")


class TickMissingTest(ConfigTestCase):
    """D3: per_listener_settings on 2.0.11 (no TICK) warns at start when the
    configuration depends on the periodic work."""

    def per_listener(self, opts):
        return self.start_broker(["per_listener_settings true"], listeners=[["allow_anonymous true"]],
                                 plugin_opts=opts)

    def test_local_sink_and_stats(self):
        b = self.per_listener([("local_topic", "ev/{event}"), ("stats_interval", "1")])
        self.assertIn(TICK_WARNING.format(
            what="the local sink's deliveries, the $SYS/broker/eventhook statistics "
                 "(plugin_opt_stats_interval), "), b.log())

    def test_stats_only(self):
        b = self.per_listener([("file_path", "{dir}/ev.jsonl")])  # stats_interval defaults to 60
        self.assertIn(TICK_WARNING.format(
            what="the $SYS/broker/eventhook statistics (plugin_opt_stats_interval), "), b.log())

    def test_local_sink_counts_without_tick(self):
        # Without TICK the local sink is driven from client callbacks, in
        # the middle of the broker's loop passes: what it hands over counts
        # delivered at once (with TICK, one pass later). Both events here
        # reach the viewer, and the stop line says so.
        b = self.per_listener([("local_topic", "ev/{event}/{clientid}"), ("local_events", "client.connected"),
                               ("stats_interval", "0")])
        viewer = RawClient(b.port, "viewer")
        self.assertEqual(viewer.connect().rc, 0)
        viewer.subscribe("ev/#")
        a1 = RawClient(b.port, "a1")
        self.assertEqual(a1.connect().rc, 0)

        # Client callbacks at least 100 ms apart drive the sink; none comes
        # after the one that handed a1's event over.
        def handed_over():
            time.sleep(0.3)
            if any(x.topic == "ev/client.connected/a1" for x in viewer.messages):
                return True
            a1.subscribe("x/y")
            return False

        wait_until(handed_over, message="a1's event at the viewer")
        self.assertEqual(b.stop(), 0)
        self.assertIn("eventhook: local: stopped; enqueued 2, delivered 2, failed 0, dropped 0, "
                      "left undelivered at shutdown 0", b.log())

    def test_no_warning_without_local_sink_or_stats(self):
        b = self.per_listener([("file_path", "{dir}/ev.jsonl"), ("stats_interval", "0")])
        self.assertIn("sink(s)", b.log())
        self.assertNotIn("TICK", b.log())

    def test_no_warning_without_per_listener_settings(self):
        b = self.start_broker(["allow_anonymous true"], plugin_opts=[("local_topic", "ev/{event}")])
        self.assertIn("sink(s)", b.log())
        self.assertNotIn("TICK", b.log())


class ReloadTest(ConfigTestCase):
    """D2: plugin_opt_ changes are not applied at SIGHUP (Mosquitto 2.0 does
    not re-initialise plugins); the plugin says which changed, which would
    stop the next start, and which lines of its block the broker itself
    will refuse then, and keeps running as before."""

    CHANGED = ("eventhook: changed plugin_opt_ lines take effect at the next restart (Mosquitto 2.0 does not "
               "re-initialise plugins on SIGHUP); in '{conf}'{what}")
    WOULD_STOP = "eventhook: the changed options would stop the broker at the next restart: "
    REFUSED = ("eventhook: the broker will refuse to start with this line at the next restart (Mosquitto "
               "checks plugin_opt_ lines only at start): ")
    AT_END = ("eventhook: this line has no value and ends its file without a newline: at the next restart "
              "Mosquitto 2.0.11 refuses to start or takes what its line buffer held before for the value "
              "(Mosquitto checks plugin_opt_ lines only at start): ")

    def connect(self, b, client_id):
        c = RawClient(b.port, client_id)
        self.assertEqual(c.connect().rc, 0)
        c.disconnect()

    def reload_with(self, b, opts):
        b.plugin_opts = opts
        b.write_config()
        return self.reload(b)

    def reload(self, b):
        before = len(b.log())
        b.sighup()
        # The plugin's reload callback runs in the same loop iteration as
        # "Reloading config.": a client handled after it proves it ran.
        self.connect(b, "barrier")
        wait_events(b.path("a.jsonl"), lambda evs: any(e.get("clientid") == "barrier" for e in evs))
        return b.log()[before:]

    def test_changed_options_reported_and_not_applied(self):
        b = self.start_broker(["allow_anonymous true"],
                              plugin_opts=[("file_path", "{dir}/a.jsonl"), ("events", "client.connected"),
                                           ("stats_interval", "0"), ("node_id", "n1")])
        self.connect(b, "before")
        said = self.reload_with(b, [("file_path", "{dir}/b.jsonl"), ("events", "client.*"),
                                    ("bogus_option", "1"), ("queue_size", "banana"), ("node_id", "n1 ")])
        self.assertIn(self.CHANGED.format(conf=b.conf_path, what="; changed: file_path, events; added: "
                                          "bogus_option, queue_size; removed: stats_interval"), said)
        self.assertIn(self.WOULD_STOP + "plugin_opt_bogus_option: unknown option (see docs/configuration.md or "
                      "mosquitto-eventhook(7) for the accepted keys)", said)
        self.assertIn(self.WOULD_STOP + "plugin_opt_queue_size: 'banana' is not a whole number from 16 to "
                      "16777216", said)
        self.assertEqual(said.count("eventhook: changed plugin_opt_ lines"), 1, said)
        self.assertEqual(said.count(self.WOULD_STOP), 2, said)
        # Events keep flowing as before: same file, same event list.
        self.connect(b, "after")
        events = wait_events(b.path("a.jsonl"), lambda evs: any(e.get("clientid") == "after" for e in evs))
        self.assertEqual([(e["clientid"], e["event"]) for e in events],
                         [("before", "client.connected"), ("barrier", "client.connected"),
                          ("after", "client.connected")])
        self.assertFalse(os.path.exists(b.path("b.jsonl")))
        self.assertTrue(b.alive())

    def test_unchanged_options_say_nothing(self):
        opts = [("file_path", "{dir}/a.jsonl"), ("events", "client.connected")]
        b = self.start_broker(["allow_anonymous true"], plugin_opts=opts)
        # A trailing blank is no change: it is dropped from every value.
        said = self.reload_with(b, [("file_path", "{dir}/a.jsonl "), ("events", "client.connected")])
        self.assertNotIn("eventhook: changed plugin_opt_ lines", said)
        self.assertNotIn(self.WOULD_STOP, said)
        self.assertNotIn(self.REFUSED, said)
        self.assertNotIn(self.AT_END, said)

    @staticmethod
    def line_of(path, text):
        """The number of the line of the file at path that reads text."""
        with open(path, encoding="utf-8") as f:
            return f.read().split("\n").index(text) + 1

    def test_lines_the_broker_refuses_are_named(self):
        b = self.start_broker(["allow_anonymous true"], plugin_opts=[("file_path", "{dir}/a.jsonl"),
                                                                     ("node_id", "n1")])
        # A value deleted, blanks only, a key of 2 bytes and of none, and a
        # secret after a tab (the broker ends a key only at a space).
        said = self.reload_with(b, [("file_path", "{dir}/a.jsonl"), ("node_id", None), ("events", " \t"),
                                    ("ab", "1"), ("", None), ("kafka.sasl.password\tS3cr3t", None)])
        conf = b.conf_path
        at = {text: f"'{conf}' line {self.line_of(conf, text)}: " for text in (
            "plugin_opt_node_id", "plugin_opt_events  \t", "plugin_opt_ab 1", "plugin_opt_",
            "plugin_opt_kafka.sasl.password\tS3cr3t")}
        expected = [
            at["plugin_opt_node_id"] + "plugin_opt_node_id: no value",
            at["plugin_opt_events  \t"] + "plugin_opt_events: no value",
            at["plugin_opt_ab 1"] + "plugin_opt_ab: Mosquitto needs a key of at least 3 bytes",
            at["plugin_opt_"] + "plugin_opt_: no key",
            at["plugin_opt_kafka.sasl.password\tS3cr3t"] + "plugin_opt_kafka.sasl.password\\t<and 6 more bytes, "
            "not shown>: no value (a tab does not end the key: separate key and value with a space)",
        ]
        self.assertEqual([line.split(": ", 1)[1] for line in said.splitlines() if self.REFUSED in line],
                         [self.REFUSED + e for e in expected], said)
        self.assertNotIn("S3cr3t", said)
        # None of them is an option, and node_id is not "removed": its line
        # is named instead.
        self.assertNotIn("eventhook: changed plugin_opt_ lines", said)
        self.assertNotIn(self.WOULD_STOP, said)
        self.assertTrue(b.alive())

    def test_tab_for_a_space_is_named_not_removed(self):
        b = self.start_broker(["allow_anonymous true"], plugin_opts=[("file_path", "{dir}/a.jsonl"),
                                                                     ("stats_interval", "30")])
        said = self.reload_with(b, [("file_path", "{dir}/a.jsonl"), ("stats_interval\t30", None)])
        conf = b.conf_path
        at = f"'{conf}' line {self.line_of(conf, 'plugin_opt_stats_interval' + chr(9) + '30')}: "
        self.assertEqual([line.split(": ", 1)[1] for line in said.splitlines() if self.REFUSED in line],
                         [self.REFUSED + at + "plugin_opt_stats_interval\\t<and 2 more bytes, not shown>: "
                          "no value (a tab does not end the key: separate key and value with a space)"], said)
        # Its line is named, so stats_interval is not also "removed".
        self.assertNotIn("eventhook: changed plugin_opt_ lines", said)

    def test_refused_line_in_an_included_file(self):
        b = self.add_broker(Broker(["allow_anonymous true", "include_dir {dir}/conf.d"], plugin=False,
                                   start=False, name="include"))
        conf_d = b.path("conf.d")
        os.mkdir(conf_d)

        def write(name, text):
            with open(os.path.join(conf_d, name), "w", encoding="utf-8") as f:
                f.write(text.replace("{dir}", str(b.dir)).replace("{plugin}", require_plugin()))

        ours = "plugin {plugin}\nplugin_opt_file_path {dir}/a.jsonl\n"
        write("50-eventhook.conf", ours)
        b.start()
        # Only the line in our block counts: not one in the main file
        # (before any plugin line), nor one after another plugin's line.
        # Comments and blank lines count as lines.
        b.configure(["allow_anonymous true", "plugin_opt_no_block", "include_dir {dir}/conf.d"])
        b.write_config()
        write("50-eventhook.conf", "# eventhook\n\n" + ours + "   plugin_opt_node_id\n# plugin_opt_events\n"
              "plugin /nonexistent/other.so\nplugin_opt_other_block\n")
        said = self.reload(b)
        self.assertEqual([line.split(": ", 1)[1] for line in said.splitlines() if self.REFUSED in line],
                         [self.REFUSED + f"'{conf_d}/50-eventhook.conf' line 5: plugin_opt_node_id: no value"],
                         said)
        # Fixed, it is no longer named.
        write("50-eventhook.conf", ours)
        said = self.reload(b)
        self.assertNotIn(self.REFUSED, said)
        self.assertNotIn(self.AT_END, said)
        # As the last line, without a newline, the broker may take leftover
        # bytes of its buffer for the value: said so, not "will refuse".
        write("50-eventhook.conf", ours + "plugin_opt_node_id")
        said = self.reload(b)
        self.assertEqual([line.split(": ", 1)[1] for line in said.splitlines() if "eventhook: this line" in line],
                         [self.AT_END + f"'{conf_d}/50-eventhook.conf' line 3: plugin_opt_node_id: no value"],
                         said)
        self.assertNotIn(self.REFUSED, said)

    def test_refused_lines_at_start_are_the_broker_s_to_report(self):
        # At start the broker refuses such a line itself, before any plugin
        # is loaded: the plugin says nothing.
        rc, text = self.run_bad([("file_path", "{dir}/a.jsonl"), ("node_id", None)])
        self.assertNotEqual(rc, 0, text)
        self.assertIn("Error: Empty node_id value in configuration.", text)
        self.assertNotIn("eventhook:", text)

    def test_per_listener_compares_its_own_block(self):
        b = self.start_broker(["per_listener_settings true"], listeners=[["allow_anonymous true"]] * 2,
                              listener_plugin_opts=[{"file_path": "{dir}/a.jsonl", "stats_interval": "0"},
                                                    {"file_path": "{dir}/c.jsonl", "stats_interval": "0"}])
        b.listener_plugin_opts = [{"file_path": "{dir}/a.jsonl", "stats_interval": "0"},
                                  {"file_path": "{dir}/c.jsonl", "stats_interval": "5"}]
        said = self.reload_with(b, b.plugin_opts)
        self.assertEqual(said.count("eventhook: changed plugin_opt_ lines"), 1, said)
        self.assertIn(self.CHANGED.format(conf=b.conf_path, what="; changed: stats_interval"), said)

if __name__ == "__main__":
    unittest.main()
