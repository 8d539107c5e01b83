"""Differential transparency test: the plugin must not change any answer.

Each test method builds one broker configuration twice: once without the
plugin (the baseline) and once with it (file sink on, every event enabled).
The same client script runs against both, in parallel, and writes a
transcript of everything a client can observe: CONNACK codes and
session-present flags, SUBACK, PUBACK/PUBREC/PUBCOMP and UNSUBACK codes, the
messages every subscriber received (topic, payload, qos, retain), whether
wills were delivered, what happened to the older connection at a takeover,
what a resumed durable session got back, and whether connected clients
survived a reload.  The transcripts must be identical; on failure the test
prints a unified diff of the two.

Why the script is so broad: a plugin that only registers BASIC_AUTH and
ACL_CHECK callbacks and answers DEFER still changes the broker's decisions
when no other provider is present (design notes, mosquitto-2.0-capture.md
section 3): a client with a username is refused where it was accepted, and
every subscribe, publish, delivery and will is denied.  Those cases only show
up for particular combinations of configuration, credentials and access, so
every configuration gets every identity and every kind of access.

Configurations (one test method each): (a) anonymous, no security file;
(b) anonymous + password_file; (c) password_file only; (d) password_file +
acl_file (user, anonymous and pattern rules; check_retain_source); (e)
acl_file only; (f) dynamic security, then a reload and a dynsec kick; (g)
per_listener_settings with an open and a secured listener, across reloads;
(h) our plugin before and after dynsec (with password_file); (i) a sequence
of reloads that add, change and remove the security files and flip
allow_anonymous; and beyond the brief, configurations where a plugin that
reads mosquitto.conf itself can go wrong: (j) local only mode, (k) the same
setting written in different ways, (l) trailing comments, (m) plugins in
only one listener block, (n) legacy and unknown third-party plugins.

Set EH_TRANSCRIPT_DIR=<dir> to keep every transcript as <config>-<side>.txt.

A configuration that reproduces a reported plugin bug carries
``known_difference=`` (see TransparencyTest.differential): it is reported as
skipped with the reason and the head of the diff, and fails as soon as the
difference disappears.

Without a built plugin, the baseline is compared with a second plugin-free
broker (this validates that the script is deterministic) and the test is
reported as skipped.

Nothing here waits for something not to happen: "not delivered" is proven
by ping barriers (eh_harness.barrier) and broker-side socket closes.
"""

from __future__ import annotations

import concurrent.futures
import difflib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

import eh_harness as h
from eh_harness import (DYNSEC_PLUGIN, MQTTV31, MQTTV311, MQTTV5, Broker, BrokerTestCase,
                        Connack, MqttClosed, MqttTimeout, RawClient, Will, barrier,
                        dynsec_client, plugin_path, read_events, write_dynsec_file,
                        write_password_file)

PROTOCOLS = (MQTTV311, MQTTV5)
SESSION_EXPIRY = 3600

# Shared by every configuration.  max_inflight_messages 0 lets the broker
# write every QoS 1/2 message at once instead of queueing it behind
# unacknowledged ones, which is what makes the ping barriers exact.
COMMON = ["max_inflight_messages 0", "persistence false"]


class Ident(NamedTuple):
    name: str
    username: Optional[str]
    password: Optional[str]


ANON = Ident("anon", None, None)
ALICE = Ident("alice", "alice", "alicepw")
ALICE_WRONG = Ident("alice-wrongpw", "alice", "wrong")
ALICE_NOPW = Ident("alice-nopw", "alice", None)
BOB = Ident("bob", "bob", "bobpw")
CAROL = Ident("carol", "carol", "carolpw")
MALLORY = Ident("mallory", "mallory", "malpw")   # in no password file
PW_ONLY = Ident("pw-only", None, "pw")           # password without username

# Every identity tries to connect; the "active" ones also run the pub/sub,
# will, takeover and durable-session scenarios (whether or not they are
# accepted: a refusal is recorded and the scenario moves on).
CONNECT_IDENTS = [ANON, ALICE, ALICE_WRONG, ALICE_NOPW, BOB, CAROL, MALLORY, PW_ONLY]
ACTIVE_IDENTS = [ANON, ALICE, BOB, CAROL, MALLORY]


# --------------------------------------------------------------------------
# Security fixtures
# --------------------------------------------------------------------------

PASSWORDS = {"alice": "alicepw", "bob": "bobpw"}
# After the reload in config (i): alice's password changes, bob is removed,
# carol is added.
PASSWORDS_CHANGED = {"alice": "alicepw-new", "carol": "carolpw"}

ACL = """\
# anonymous clients
topic readwrite pub/#
topic read ro/#
topic write wo/#

user alice
topic readwrite pub/#
topic read ro/#
topic write wo/#
topic readwrite alice/#
topic deny secret/#

user bob
topic readwrite #

user carol
topic read pub/#

pattern readwrite clients/%c/#
pattern read users/%u/#
"""

# After the reload in config (i): alice loses pub/ writes and gains secret/,
# carol may now write, anonymous clients lose ro/.
ACL_CHANGED = """\
topic readwrite pub/#
topic write wo/#

user alice
topic read pub/#
topic readwrite secret/#

user carol
topic readwrite pub/#
topic readwrite ro/#

pattern readwrite clients/%c/#
"""


def _acl(acltype: str, topic: str, allow: bool = True, priority: int = 0) -> dict:
    return {"acltype": acltype, "topic": topic, "allow": allow, "priority": priority}


def write_dynsec(path: Path, with_bob: bool = True) -> str:
    """alice: a restricted role that allows some topics and explicitly denies
    others (subscribe, publish, receive and unsubscribe); bob: everything,
    including the dynsec control topic; carol: disabled; anonymous clients: a
    small role via anonymousGroup."""
    user_role = {"rolename": "user", "acls": [
        _acl("publishClientSend", "pub/#"), _acl("publishClientSend", "wo/#"),
        _acl("publishClientSend", "alice/#"), _acl("publishClientSend", "secret/#", False),
        _acl("publishClientReceive", "wo/#", False),
        _acl("subscribePattern", "pub/#"), _acl("subscribePattern", "ro/#"),
        _acl("subscribePattern", "wo/#"), _acl("subscribePattern", "alice/#"),
        _acl("subscribePattern", "clients/+/#"),
        _acl("subscribeLiteral", "secret/#", False),
        _acl("unsubscribePattern", "secret/#", False),
    ]}
    all_role = {"rolename": "all", "acls": [
        _acl("publishClientSend", "#"), _acl("publishClientReceive", "#"),
        _acl("subscribePattern", "#"), _acl("unsubscribePattern", "#"),
        _acl("publishClientSend", "$CONTROL/dynamic-security/#"),
        _acl("publishClientReceive", "$CONTROL/dynamic-security/#"),
        _acl("subscribePattern", "$CONTROL/dynamic-security/#")]}
    anon_role = {"rolename": "anon", "acls": [
        _acl("publishClientSend", "pub/#"), _acl("subscribePattern", "pub/#"),
        _acl("subscribePattern", "ro/#"), _acl("publishClientReceive", "ro/#", False)]}
    clients = [dynsec_client("alice", "alicepw", ["user"])]
    if with_bob:
        clients.append(dynsec_client("bob", "bobpw", ["all"]))
    carol = dynsec_client("carol", "carolpw", ["user"])
    carol["disabled"] = True
    clients.append(carol)
    groups = [{"groupname": "anonymous", "roles": [{"rolename": "anon"}], "clients": []}]
    return write_dynsec_file(path, clients, [user_role, all_role, anon_role], groups,
                             anonymous_group="anonymous")


# --------------------------------------------------------------------------
# Transcript and client scripts
# --------------------------------------------------------------------------

def fmt_connack(ack: Connack) -> str:
    if ack.rc is None:
        return "closed without CONNACK"
    extra = ""
    if "assigned_client_identifier" in ack.properties:
        extra = " (client id assigned)"
    return f"rc={ack.rc} session_present={int(bool(ack.session_present))}{extra}"


def _fmt_payload(payload: bytes) -> str:
    if len(payload) > 64:
        return f"<{len(payload)} bytes, sha1 {hashlib.sha1(payload).hexdigest()[:16]}>"
    return repr(payload)


def fmt_received(c: RawClient) -> List[str]:
    """Everything a subscriber got, sorted (the broker's interleaving of
    QoS 0 and QoS 1/2 deliveries is not what this test is about)."""
    lines = []
    for pub in c.publishes:
        line = (f"{pub.topic} qos={pub.qos} retain={int(pub.retain)} "
                f"payload={_fmt_payload(pub.payload)}")
        if pub.properties:
            line += f" properties={sorted(pub.properties.items())}"
        lines.append(line)
    return sorted(lines) or ["(none)"]


class ScriptAborted(Exception):
    """A client step timed out; the rest of the script is skipped."""


class Run:
    """One broker of a comparison pair and the transcript of what its clients
    saw.  Client ids and topics carry the stage tag and protocol, so stages
    never see each other's traffic except through the broker state the
    scenario is about (retained messages are cleared again)."""

    def __init__(self, broker: Broker, workdir: Path):
        self.broker = broker
        self.dir = workdir
        self.lines: List[str] = []
        self._clients: List[RawClient] = []

    # transcript
    def add(self, key: str, value) -> None:
        if isinstance(value, list):
            self.lines.append(f"{key}:")
            self.lines.extend(f"    {v}" for v in value)
        else:
            self.lines.append(f"{key}: {value}")

    def guarded(self, key: str, fn: Callable[[], object]):
        """Run one client action, recording its answer or how it failed.
        A timeout ends the script: with a hung broker every later step
        would wait out its own deadline too."""
        try:
            value = fn()
        except MqttClosed:
            value = "connection closed"
        except MqttTimeout as e:
            self.add(key, f"TIMEOUT ({e})")
            raise ScriptAborted(key) from e
        except OSError as e:
            value = f"socket error {type(e).__name__}"
        self.add(key, "sent" if value is None else str(value))
        return value

    # clients
    def client(self, port: int, cid: str, proto: int) -> RawClient:
        c = RawClient(port, cid, proto)
        self._clients.append(c)
        return c

    def connect(self, key: str, port: int, cid: str, proto: int, ident: Ident,
                **kwargs) -> Optional[RawClient]:
        """Connect and record the CONNACK; return the client if accepted."""
        c = self.client(port, cid, proto)
        try:
            ack = c.connect(ident.username, ident.password, **kwargs)
        except MqttTimeout as e:
            self.add(key, f"TIMEOUT ({e})")
            raise ScriptAborted(key) from e
        except OSError as e:
            self.add(key, f"socket error {type(e).__name__}")
            return None
        self.add(key, fmt_connack(ack))
        if ack.rc == 0:
            return c
        # A refusal must end with the broker closing the socket; recording
        # it keeps "refused but left open" visible in the diff.
        if not c.wait_closed():
            self.add(key + " (after refusal)", "connection left open")
        c.close()
        return None

    def close_all(self) -> None:
        for c in self._clients:
            c.close()
        self._clients.clear()

    def reload(self, key: str, conf_lines=None, listeners=None) -> None:
        if conf_lines is not None or listeners is not None:
            self.broker.configure(conf_lines, listeners)
            self.broker.write_config()
        self.broker.sighup()
        self.add(key, "SIGHUP done")


def sub_filters(tag: str, proto: int, ident: Ident) -> List[str]:
    return ["pub/#", "ro/#", "wo/#", "secret/#", "alice/#", "clients/+/#", "users/+/#",
            f"$share/g-{ident.name}/pub/{tag}/{proto}/+/shared"]


def pub_topics(tag: str, proto: int, ident: Ident, cid: str) -> List[str]:
    base = f"{tag}/{proto}/{ident.name}"
    return [f"pub/{base}", f"ro/{base}", f"wo/{base}", f"secret/{base}",
            f"alice/{base}", f"clients/{cid}", f"users/{ident.username or 'nobody'}/{base}",
            f"$SYS/eh/{base}", f"$CONTROL/eh/{base}"]


def _attempt(c: RawClient, data: bytes) -> str:
    """Send raw bytes on a fresh connection; report CONNACK or close."""
    try:
        c.open()
        c.send(data)
        _, _, body = c.expect(h.CONNACK)
        rc = h.decode_connack(body, MQTTV311).rc
        return f"CONNACK rc={rc}, then " + ("closed" if c.wait_closed() else "open")
    except h.MqttClosed:
        return "closed without CONNACK"
    finally:
        c.close()


def round_malformed(r: Run, port: int, tag: str, proto: int) -> None:
    """CONNECTs the broker rejects before authentication, and protocol
    errors after it: only DISCONNECT events with no client id reach a
    plugin, which must not change what the client sees."""
    pre = f"{tag}/{proto}"
    cid = f"{tag}-{proto}-bad"
    good = h.encode_connect(cid, proto)
    flags_at = 2 + 6 + 1  # fixed header, "MQTT", level
    reserved = good[:flags_at] + bytes([good[flags_at] | 0x01]) + good[flags_at + 1:]
    cases = {
        "protocol level 6": h.encode_connect(cid, 6),
        "reserved flag set": reserved,
        "PUBLISH before CONNECT": h.encode_publish("pub/x", b"x", 0, protocol=proto),
        "will QoS 3": h.encode_connect(cid, proto, will=Will("pub/w", b"", 3)),
    }
    for label, data in cases.items():
        r.add(f"{pre} malformed {label}", _attempt(r.client(port, cid, proto), data))
    c = r.connect(f"{pre} malformed second CONNECT first", port, cid, proto, ANON)
    if c:
        r.guarded(f"{pre} malformed second CONNECT send", lambda: c.send(good))
        r.add(f"{pre} malformed second CONNECT fate", _fate(c))
    silent = r.client(port, cid, proto).open()
    r.guarded(f"{pre} TCP connection closed without CONNECT", silent.drop)


def round_connects(r: Run, port: int, tag: str, proto: int) -> None:
    for ident in CONNECT_IDENTS:
        c = r.connect(f"{tag}/{proto} connect {ident.name}", port,
                      f"{tag}-{proto}-conn-{ident.name}", proto, ident)
        if c:
            c.disconnect()
    for ident in (ANON, ALICE):
        c = r.connect(f"{tag}/{proto} connect {ident.name} with empty client id",
                      port, "", proto, ident)
        if c:
            c.disconnect()
        if proto == MQTTV311:
            c = r.connect(f"{tag}/3 connect {ident.name} with MQTT 3.1", port,
                          f"c31-{tag}-{ident.name}"[:23], MQTTV31, ident)
            if c:
                c.disconnect()
        if proto == MQTTV5:
            # Extended authentication that no provider supports: the broker
            # answers "bad authentication method" unless a plugin claims it.
            c = r.connect(f"{tag}/{proto} connect {ident.name} with authentication method",
                          port, f"{tag}-{proto}-extauth-{ident.name}", proto, ident,
                          properties={"authentication_method": "EH-TEST",
                                      "authentication_data": b"x"})
            if c:
                c.disconnect()


def round_long_fields(r: Run, port: int, tag: str, proto: int) -> None:
    for label, cid, ident in (
            ("long client id", f"{tag}-{proto}-" + "L" * 600, ANON),
            ("long username", f"{tag}-{proto}-longuser", Ident("long", "u" * 600, "x")),
            ("unicode client id", f"{tag}-{proto}-ünï €", ANON)):
        c = r.connect(f"{tag}/{proto} connect with {label}", port, cid, proto, ident)
        if c:
            c.disconnect()


def publish_retransmitted(c: RawClient, topic: str) -> str:
    """A QoS 2 PUBLISH sent twice with the same packet id before PUBREL:
    the broker must route it once and answer PUBREC both times."""
    mid = c.next_mid()
    answers = []
    for dup in (False, True):
        c.send(h.encode_publish(topic, b"sent twice", 2, mid=mid, dup=dup, protocol=c.protocol))
        _, _, body = c.expect(h.PUBREC, mid)
        answers.append(h.decode_ack(body, c.protocol)[1])
    if c.protocol != MQTTV5 or answers[-1] < 0x80:
        c.send(h.encode_ack(h.PUBREL, mid, protocol=c.protocol))
        _, _, body = c.expect(h.PUBCOMP, mid)
        answers.append(h.decode_ack(body, c.protocol)[1])
    return "PUBREC, PUBREC, PUBCOMP codes " + str(answers)


def round_pubsub(r: Run, port: int, tag: str, proto: int) -> Dict[str, RawClient]:
    """Observers subscribe to everything they might be allowed to read, then
    each publishes to every kind of topic at QoS 0, 1 and 2.  They stay
    connected to watch the later scenarios."""
    pre = f"{tag}/{proto}"
    observers: Dict[str, RawClient] = {}
    for ident in ACTIVE_IDENTS:
        cid = f"{tag}-{proto}-obs-{ident.name}"
        c = r.connect(f"{pre} observer {ident.name} connect", port, cid, proto, ident)
        if c is None:
            continue
        observers[ident.name] = c
        filters = sub_filters(tag, proto, ident)
        r.guarded(f"{pre} observer {ident.name} subscribe {filters}",
                  lambda: c.subscribe([(f, 2) for f in filters]))
    for ident in ACTIVE_IDENTS:
        c = observers.get(ident.name)
        if c is None:
            continue
        for topic in pub_topics(tag, proto, ident, c.client_id):
            for qos in (0, 1, 2):
                t = f"{topic}/q{qos}"
                r.guarded(f"{pre} {ident.name} publish {t} qos={qos}",
                          lambda: c.publish(t, f"{c.client_id}:{t}", qos))
        t = f"pub/{tag}/{proto}/{ident.name}/shared"
        r.guarded(f"{pre} {ident.name} publish {t} qos=1", lambda: c.publish(t, "shared", 1))
        t = f"pub/{tag}/{proto}/{ident.name}/ünïcødé"
        r.guarded(f"{pre} {ident.name} publish binary payload to {t}",
                  lambda: c.publish(t, b"\x00\xff\x00", 2))
        for kind in ("pub", "secret"):
            t = f"{kind}/{tag}/{proto}/{ident.name}/retransmit"
            r.guarded(f"{pre} {ident.name} QoS 2 retransmission to {t}",
                      lambda: publish_retransmitted(c, t))
        if proto == MQTTV5:
            t = f"pub/{tag}/{proto}/{ident.name}/props"
            r.guarded(f"{pre} {ident.name} publish with properties to {t}",
                      lambda: c.publish(t, b"{}", 1, properties=MESSAGE_PROPERTIES))
    first = next(iter(observers.values()), None)
    if first is not None:
        t = f"pub/{tag}/{proto}/large"
        big = bytes(range(256)) * 800
        r.guarded(f"{pre} publish {len(big)} bytes to {t}", lambda: first.publish(t, big, 1))
    barrier(observers.values(), observers.values())
    return observers


MESSAGE_PROPERTIES = {
    "payload_format_indicator": 1, "content_type": "application/json",
    "response_topic": "pub/reply", "correlation_data": b"\x01\x02",
    "user_property": [("k", "v"), ("k", "v2"), ("ü", "€")]}


def round_retained(r: Run, port: int, tag: str, proto: int,
                   observers: Dict[str, RawClient]) -> None:
    pre = f"{tag}/{proto}"
    kinds = ("pub", "ro", "secret")
    for name, c in observers.items():
        for kind in kinds:
            t = f"{kind}/{tag}/{proto}/{name}/ret"
            r.guarded(f"{pre} {name} publish retained {t}",
                      lambda: c.publish(t, f"retained by {name}", 1, retain=True))
    for ident in ACTIVE_IDENTS:
        late = r.connect(f"{pre} late subscriber {ident.name} connect", port,
                         f"{tag}-{proto}-late-{ident.name}", proto, ident)
        if late is None:
            continue
        filters = [f"{kind}/{tag}/{proto}/+/ret" for kind in kinds]
        r.guarded(f"{pre} late subscriber {ident.name} subscribe {filters}",
                  lambda: late.subscribe([(f, 1) for f in filters]))
        # Retained messages are queued right after the SUBACK, so one ping
        # proves the list below is complete.
        r.guarded(f"{pre} late subscriber {ident.name} ping", late.ping)
        r.add(f"{pre} late subscriber {ident.name} received", fmt_received(late))
        late.disconnect()
    for name, c in observers.items():
        for kind in kinds:
            t = f"{kind}/{tag}/{proto}/{name}/ret"
            r.guarded(f"{pre} {name} clear retained {t}",
                      lambda: c.publish(t, b"", 1, retain=True))
    barrier(observers.values(), observers.values())


def round_wills(r: Run, port: int, tag: str, proto: int,
                observers: Dict[str, RawClient], will_delay: bool = False) -> None:
    pre = f"{tag}/{proto}"
    for ident in ACTIVE_IDENTS:
        base = f"{tag}/{proto}/{ident.name}"
        cases = [("abnormal", f"pub/{base}/will-abnormal", "drop"),
                 ("normal", f"pub/{base}/will-normal", "disconnect"),
                 ("denied-topic", f"secret/{base}/will", "drop"),
                 ("retained", f"pub/{base}/will-retained", "drop")]
        if proto == MQTTV5:
            cases.append(("disconnect-with-will", f"pub/{base}/will-rc4", "disconnect-4"))
        for label, topic, how in cases:
            will = Will(topic, f"will of {ident.name}".encode(), 1, label == "retained")
            c = r.connect(f"{pre} will {label} {ident.name} connect", port,
                          f"{tag}-{proto}-will-{label}-{ident.name}", proto, ident, will=will)
            if c is None:
                continue
            # drop() and disconnect() return once the broker has closed the
            # socket, i.e. after it has published or discarded the will.
            if how == "drop":
                r.guarded(f"{pre} will {label} {ident.name} abnormal close", c.drop)
            elif how == "disconnect":
                r.guarded(f"{pre} will {label} {ident.name} DISCONNECT", c.disconnect)
            else:
                r.guarded(f"{pre} will {label} {ident.name} DISCONNECT 0x04",
                          lambda: c.disconnect(0x04))
        late = r.connect(f"{pre} will retained {ident.name} reader connect", port,
                         f"{tag}-{proto}-willreader-{ident.name}", proto, ANON)
        if late is not None:
            t = f"pub/{base}/will-retained"
            r.guarded(f"{pre} will retained {ident.name} reader subscribe", lambda: late.subscribe(t, 1))
            r.guarded(f"{pre} will retained {ident.name} reader ping", late.ping)
            r.add(f"{pre} will retained {ident.name} reader received", fmt_received(late))
            if late.messages:
                r.guarded(f"{pre} will retained {ident.name} clear", lambda: late.publish(t, b"", 1, True))
            late.disconnect()
    barrier([], observers.values())
    watcher = observers.get(ANON.name)
    if will_delay and proto == MQTTV5 and watcher is not None:
        # The broker publishes a delayed will from its main loop about a
        # second later, re-checking WRITE access for a client that no longer
        # has a socket.  Only configurations where the baseline delivers it
        # enable this, so the wait is a positive one.
        topic = f"pub/{tag}/{proto}/anon/will-delayed"
        c = r.connect(f"{pre} will delayed anon connect", port, f"{tag}-{proto}-will-delayed",
                      proto, ANON, will=Will(topic, b"late will", 1, False,
                                             {"will_delay_interval": 1}))
        if c is not None:
            r.guarded(f"{pre} will delayed anon abnormal close", c.drop)
            try:
                watcher.wait_messages(lambda msgs: any(m.topic == topic for m in msgs))
                r.add(f"{pre} will delayed anon", "delivered")
            except MqttTimeout:
                r.add(f"{pre} will delayed anon", "not delivered within the deadline")


def _fate(c: RawClient) -> str:
    if c.alive():
        return "still connected"
    if c.server_disconnect is not None:
        return f"closed by broker with DISCONNECT 0x{c.server_disconnect:02x}"
    return "closed by broker"


def round_takeover(r: Run, port: int, tag: str, proto: int,
                   observers: Dict[str, RawClient]) -> None:
    pre = f"{tag}/{proto}"
    expiry = SESSION_EXPIRY if proto == MQTTV5 else None
    for ident in ACTIVE_IDENTS:
        cid = f"{tag}-{proto}-take-{ident.name}"
        will = Will(f"pub/{tag}/{proto}/{ident.name}/will-takeover", b"taken over", 1)
        first = r.connect(f"{pre} takeover {ident.name} first connect", port, cid, proto,
                          ident, will=will)
        if first is None:
            continue
        if ident.username:
            wrong = Ident(ident.name + "-wrongpw", ident.username, "not-the-password")
            intruder = r.connect(f"{pre} takeover {ident.name} same id, wrong password",
                                 port, cid, proto, wrong)
            if intruder:
                intruder.disconnect()
            r.add(f"{pre} takeover {ident.name} first connection after failed takeover",
                  _fate(first))
        second = r.connect(f"{pre} takeover {ident.name} second connect", port, cid, proto, ident)
        r.add(f"{pre} takeover {ident.name} first connection after takeover", _fate(first))
        if second:
            second.disconnect()

        # The same with a durable session: the subscription must survive.
        cid = f"{tag}-{proto}-dtake-{ident.name}"
        first = r.connect(f"{pre} durable takeover {ident.name} first connect", port, cid,
                          proto, ident, clean=False, session_expiry=expiry)
        if first is None:
            continue
        t = f"pub/{tag}/{proto}/{ident.name}/dtake"
        r.guarded(f"{pre} durable takeover {ident.name} subscribe", lambda: first.subscribe(t, 1))
        second = r.connect(f"{pre} durable takeover {ident.name} second connect", port, cid,
                           proto, ident, clean=False, session_expiry=expiry)
        r.add(f"{pre} durable takeover {ident.name} first connection after takeover",
              _fate(first))
        if second:
            r.guarded(f"{pre} durable takeover {ident.name} publish",
                      lambda: second.publish(t, b"after takeover", 1))
            r.guarded(f"{pre} durable takeover {ident.name} ping", second.ping)
            r.add(f"{pre} durable takeover {ident.name} received", fmt_received(second))
            second.disconnect()
        end = r.connect(f"{pre} durable takeover {ident.name} clean connect", port, cid,
                        proto, ident, clean=True, session_expiry=0 if expiry else None)
        if end:
            end.disconnect()
    barrier([], observers.values())


def round_durable(r: Run, port: int, tag: str, proto: int,
                  observers: Dict[str, RawClient]) -> None:
    """clean_session false / clean_start false with session expiry: messages
    published while offline must be delivered on reconnect."""
    pre = f"{tag}/{proto}"
    expiry = SESSION_EXPIRY if proto == MQTTV5 else None
    for ident in ACTIVE_IDENTS:
        cid = f"{tag}-{proto}-dur-{ident.name}"
        base = f"{tag}/{proto}/{ident.name}/durable"
        c = r.connect(f"{pre} durable {ident.name} connect", port, cid, proto, ident,
                      clean=False, session_expiry=expiry)
        if c is None:
            continue
        filters = [f"pub/{base}/#", f"ro/{base}/#", f"secret/{base}/#"]
        r.guarded(f"{pre} durable {ident.name} subscribe {filters}",
                  lambda: c.subscribe([(f, 2) for f in filters]))
        c.disconnect()
        pub = r.connect(f"{pre} durable {ident.name} publisher connect", port,
                        f"{tag}-{proto}-durpub-{ident.name}", proto, ident)
        if pub:
            for topic, qos in ((f"pub/{base}/q0", 0), (f"pub/{base}/q1", 1),
                               (f"pub/{base}/q2", 2), (f"ro/{base}/q1", 1),
                               (f"secret/{base}/q1", 1)):
                r.guarded(f"{pre} durable {ident.name} offline publish {topic}",
                          lambda: pub.publish(topic, f"offline {topic}", qos))
            r.guarded(f"{pre} durable {ident.name} publisher ping", pub.ping)
            pub.disconnect()
        again = r.connect(f"{pre} durable {ident.name} resume", port, cid, proto, ident,
                          clean=False, session_expiry=expiry)
        if again:
            # Queued messages are written right after the CONNACK.
            r.guarded(f"{pre} durable {ident.name} resume ping", again.ping)
            r.add(f"{pre} durable {ident.name} received after resume", fmt_received(again))
            again.disconnect()
        end = r.connect(f"{pre} durable {ident.name} clean connect", port, cid, proto, ident,
                        clean=True, session_expiry=0 if expiry else None)
        if end:
            end.disconnect()
    barrier([], observers.values())


def round_finish(r: Run, tag: str, proto: int, observers: Dict[str, RawClient]) -> None:
    pre = f"{tag}/{proto}"
    barrier(observers.values(), observers.values())
    for ident in ACTIVE_IDENTS:
        c = observers.get(ident.name)
        if c is None:
            continue
        r.add(f"{pre} observer {ident.name} received", fmt_received(c))
        filters = sub_filters(tag, proto, ident)
        r.guarded(f"{pre} observer {ident.name} unsubscribe", lambda: c.unsubscribe(filters))
        r.guarded(f"{pre} observer {ident.name} disconnect", c.disconnect)


def run_round(r: Run, port: int, tag: str, protocols: Sequence[int] = PROTOCOLS,
              will_delay: bool = False) -> None:
    """The whole client script for one listener, for each protocol."""
    for proto in protocols:
        round_connects(r, port, tag, proto)
        round_malformed(r, port, tag, proto)
        round_long_fields(r, port, tag, proto)
        observers = round_pubsub(r, port, tag, proto)
        round_retained(r, port, tag, proto, observers)
        round_wills(r, port, tag, proto, observers, will_delay)
        round_takeover(r, port, tag, proto, observers)
        round_durable(r, port, tag, proto, observers)
        round_finish(r, tag, proto, observers)
        r.close_all()


class AcrossReload(NamedTuple):
    live: Dict[str, RawClient]
    durable: List[tuple]


def prepare_across_reload(r: Run, port: int, tag: str) -> AcrossReload:
    """Clients that exist while the broker reloads: connected ones (the
    broker re-checks their credentials) and offline durable sessions with a
    queued message."""
    live: Dict[str, RawClient] = {}
    durable = []
    for proto in PROTOCOLS:
        expiry = SESSION_EXPIRY if proto == MQTTV5 else None
        for ident in ACTIVE_IDENTS:
            key = f"{tag}/{proto} {ident.name}"
            c = r.connect(f"{key} live connect", port, f"{tag}-{proto}-live-{ident.name}",
                          proto, ident)
            if c:
                r.guarded(f"{key} live subscribe", lambda: c.subscribe(f"pub/{tag}/live/#", 1))
                # Replayed after the reload, where check_retain_source makes
                # the broker re-check a publisher that may be gone by then.
                t = f"pub/{tag}/retained/{proto}/{ident.name}"
                r.guarded(f"{key} live publish retained",
                          lambda: c.publish(t, b"retained before reload", 1, retain=True))
                live[key] = c
            cid = f"{tag}-{proto}-keep-{ident.name}"
            d = r.connect(f"{key} kept session connect", port, cid, proto, ident,
                          clean=False, session_expiry=expiry)
            if d is None:
                continue
            t = f"pub/{tag}/keep/{proto}/{ident.name}"
            r.guarded(f"{key} kept session subscribe", lambda: d.subscribe(t, 1))
            d.disconnect()
            pub = r.connect(f"{key} kept session publisher connect", port,
                            f"{tag}-{proto}-keeppub-{ident.name}", proto, ident)
            if pub:
                r.guarded(f"{key} kept session publish", lambda: pub.publish(t, b"queued before reload", 1))
                pub.disconnect()
            durable.append((key, cid, proto, ident, expiry))
    return AcrossReload(live, durable)


def check_across_reload(r: Run, port: int, tag: str, state: AcrossReload) -> None:
    for key, c in state.live.items():
        r.add(f"{key} live client after reload", _fate(c))
    alive = {k: c for k, c in state.live.items() if not c.closed}
    for key, c in alive.items():
        r.guarded(f"{key} live publish after reload",
                  lambda: c.publish(f"pub/{tag}/live/{c.client_id}", b"after reload", 1))
    barrier(alive.values(), alive.values())
    for key, c in alive.items():
        r.add(f"{key} live received", fmt_received(c))
    reader = r.connect(f"{tag} retained reader connect", port, f"{tag}-retained-reader",
                       MQTTV5, ANON)
    if reader:
        r.guarded(f"{tag} retained reader subscribe",
                  lambda: reader.subscribe(f"pub/{tag}/retained/#", 1))
        r.guarded(f"{tag} retained reader ping", reader.ping)
        r.add(f"{tag} retained reader received", fmt_received(reader))
        # A snapshot: the reader receives its own clearing messages.
        for topic in sorted({m.topic for m in reader.take_messages()}):
            r.guarded(f"{tag} retained reader clears {topic}",
                      lambda: reader.publish(topic, b"", 1, retain=True))
        reader.disconnect()
    for c in alive.values():
        c.disconnect()
    for key, cid, proto, ident, expiry in state.durable:
        d = r.connect(f"{key} kept session resume after reload", port, cid, proto, ident,
                      clean=False, session_expiry=expiry)
        if d:
            r.guarded(f"{key} kept session ping", d.ping)
            r.add(f"{key} kept session received", fmt_received(d))
            d.disconnect()
        end = r.connect(f"{key} kept session clean connect", port, cid, proto, ident,
                        clean=True, session_expiry=0 if expiry else None)
        if end:
            end.disconnect()
    r.close_all()


def dynsec_command(r: Run, admin: RawClient, key: str, command: dict) -> None:
    """Send one dynsec control command and wait for its response (the
    plugin publishes it from the broker's next loop iteration)."""
    before = len(admin.messages)
    payload = json.dumps({"commands": [command]})
    r.guarded(f"{key} command {command['command']}",
              lambda: admin.publish("$CONTROL/dynamic-security/v1", payload, 1))
    try:
        msgs = admin.wait_messages(lambda m: len(m) > before)
        reply = json.loads(msgs[before].payload)["responses"][0]
        r.add(f"{key} response", reply.get("error", "ok"))
    except (MqttTimeout, ValueError, KeyError, IndexError) as e:
        r.add(f"{key} response", f"none ({type(e).__name__})")


def dynsec_kick_stage(r: Run, port: int, tag: str) -> None:
    """dynsec disables alice while she is connected with a durable session:
    the broker kicks her (Debian's 2.0.11 re-checks her subscriptions
    through the ACL chain first), refuses her, then takes her back."""
    for proto in PROTOCOLS:
        pre = f"{tag}/{proto}"
        expiry = SESSION_EXPIRY if proto == MQTTV5 else None
        admin = r.connect(f"{pre} admin bob connect", port, f"{tag}-{proto}-admin", proto, BOB)
        if admin is None:
            continue
        r.guarded(f"{pre} admin subscribe",
                  lambda: admin.subscribe("$CONTROL/dynamic-security/v1/response", 1))
        cid = f"{tag}-{proto}-kicked-alice"
        alice = r.connect(f"{pre} alice durable connect", port, cid, proto, ALICE,
                          clean=False, session_expiry=expiry)
        if alice:
            r.guarded(f"{pre} alice subscribe", lambda: alice.subscribe(
                [(f"pub/{tag}/{proto}/kick/#", 1), (f"ro/{tag}/{proto}/kick/#", 1)]))
        dynsec_command(r, admin, f"{pre} disable alice",
                       {"command": "disableClient", "username": "alice"})
        if alice:
            r.add(f"{pre} alice after disableClient", _fate(alice))
        refused = r.connect(f"{pre} alice connect while disabled", port, cid, proto, ALICE,
                            clean=False, session_expiry=expiry)
        if refused:
            refused.disconnect()
        r.guarded(f"{pre} admin publish while alice is away",
                  lambda: admin.publish(f"pub/{tag}/{proto}/kick/x", b"while away", 1))
        dynsec_command(r, admin, f"{pre} enable alice",
                       {"command": "enableClient", "username": "alice"})
        back = r.connect(f"{pre} alice resume", port, cid, proto, ALICE,
                         clean=False, session_expiry=expiry)
        if back:
            r.guarded(f"{pre} alice resume ping", back.ping)
            r.add(f"{pre} alice received after resume", fmt_received(back))
            back.disconnect()
        end = r.connect(f"{pre} alice clean connect", port, cid, proto, ALICE,
                        clean=True, session_expiry=0 if expiry else None)
        if end:
            end.disconnect()
        admin.disconnect()
    r.close_all()


# --------------------------------------------------------------------------
# Third-party plugins for the "other plugin" rows of the design table
# --------------------------------------------------------------------------

# A legacy (v4) auth plugin: ACL checks allow everything except secret/;
# with -DWITH_UNPWD it also answers passwords: alice in, bob out, others
# deferred.
LEGACY_PLUGIN_C = r"""
#include <stdbool.h>
#include <string.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
int mosquitto_auth_plugin_version(void) { return 4; }
int mosquitto_auth_plugin_init(void **u, struct mosquitto_opt *o, int c)
{ (void)u; (void)o; (void)c; return MOSQ_ERR_SUCCESS; }
int mosquitto_auth_plugin_cleanup(void *u, struct mosquitto_opt *o, int c)
{ (void)u; (void)o; (void)c; return MOSQ_ERR_SUCCESS; }
int mosquitto_auth_security_init(void *u, struct mosquitto_opt *o, int c, bool r)
{ (void)u; (void)o; (void)c; (void)r; return MOSQ_ERR_SUCCESS; }
int mosquitto_auth_security_cleanup(void *u, struct mosquitto_opt *o, int c, bool r)
{ (void)u; (void)o; (void)c; (void)r; return MOSQ_ERR_SUCCESS; }
int mosquitto_auth_acl_check(void *u, int a, struct mosquitto *cl, const struct mosquitto_acl_msg *m)
{
	(void)u; (void)a; (void)cl;
	return strncmp(m->topic, "secret/", 7) ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;
}
#ifdef WITH_UNPWD
int mosquitto_auth_unpwd_check(void *u, struct mosquitto *cl, const char *user, const char *pw)
{
	(void)u; (void)cl; (void)pw;
	if (user && !strcmp(user, "alice"))
		return MOSQ_ERR_SUCCESS;
	if (user && !strcmp(user, "bob"))
		return MOSQ_ERR_AUTH;
	return MOSQ_ERR_PLUGIN_DEFER;
}
#endif
"""

# A v5 plugin our plugin cannot identify, which defers every BASIC_AUTH and
# ACL_CHECK (so the broker's "all deferred" rules decide).
DEFERRING_PLUGIN_C = r"""
#include <stddef.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
static mosquitto_plugin_id_t *plugin_id;
static int defer(int event, void *data, void *user) { (void)event; (void)data; (void)user; return MOSQ_ERR_PLUGIN_DEFER; }
int mosquitto_plugin_version(int n, const int *v) { (void)n; (void)v; return 5; }
int mosquitto_plugin_init(mosquitto_plugin_id_t *id, void **u, struct mosquitto_opt *o, int c)
{
	(void)u; (void)o; (void)c;
	plugin_id = id;
	if (mosquitto_callback_register(id, MOSQ_EVT_BASIC_AUTH, defer, NULL, NULL))
		return MOSQ_ERR_UNKNOWN;
	return mosquitto_callback_register(id, MOSQ_EVT_ACL_CHECK, defer, NULL, NULL);
}
int mosquitto_plugin_cleanup(void *u, struct mosquitto_opt *o, int c)
{
	(void)u; (void)o; (void)c;
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, defer, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_ACL_CHECK, defer, NULL);
	return MOSQ_ERR_SUCCESS;
}
"""


def build_helper_plugin(directory: Path, name: str, source: str, *defines: str) -> str:
    """Compile a helper plugin into ``directory``; skip the test if there is
    no C compiler or no mosquitto-dev headers."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc or not os.path.isfile("/usr/include/mosquitto_plugin.h"):
        raise unittest.SkipTest("needs a C compiler and the mosquitto-dev headers")
    src = directory / f"{name}.c"
    src.write_text(source)
    out = directory / f"{name}.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", *[f"-D{d}" for d in defines],
                    "-o", str(out), str(src)], check=True, stdout=subprocess.PIPE,
                   stderr=subprocess.STDOUT)
    return str(out)


# --------------------------------------------------------------------------
# The comparison machinery
# --------------------------------------------------------------------------

class Config(NamedTuple):
    """A broker configuration and the client script to run against it.

    ``setup(dir)`` writes the configuration's files into ``dir`` and returns
    Broker keyword arguments (conf_lines, listeners, listener_plugins,
    local_only, relative_config, ...) plus ``other_plugins``: plugins that
    go after ours ("first" placement) or before it ("last")."""
    setup: Callable[[Path], dict]
    script: Callable[[Run], None]


def default_script(r: Run) -> None:
    run_round(r, r.broker.port, "s")


class TransparencyTest(BrokerTestCase):
    def _workdir(self, name: str) -> Path:
        d = Path(tempfile.mkdtemp(prefix=f"eh-{name}-"))
        if not os.environ.get("EH_KEEP_TMP"):
            self.addCleanup(shutil.rmtree, d, True)
        return d

    def _run_side(self, config: Config, name: str, plugin: bool,
                  placement: str) -> List[str]:
        workdir = self._workdir(name)
        spec = dict(config.setup(workdir))
        others = spec.pop("other_plugins", [])
        kwargs = dict(spec)
        if plugin:
            kwargs["plugin_opts"] = {"file_path": workdir / "events.jsonl", "events": "*"}
            n = len(kwargs["listeners"]) if isinstance(kwargs.get("listeners"), list) else 1
            kwargs["listener_plugin_opts"] = [
                {"file_path": workdir / f"events-listener{i}.jsonl", "events": "*"}
                for i in range(n)]
        if placement == "first":
            kwargs["extra_plugins_after"] = others
        else:
            kwargs["extra_plugins_before"] = others
        broker = Broker(plugin=plugin, workdir=str(workdir / "broker"), name=name,
                        start=False, **kwargs)
        self.add_broker(broker)
        broker.start()
        run = Run(broker, workdir)
        try:
            config.script(run)
        except (ScriptAborted, MqttTimeout, MqttClosed, OSError) as e:
            # Recorded rather than raised, so the failure shows as the point
            # where this broker's transcript departs from the other one.
            run.add("SCRIPT ABORTED", f"{type(e).__name__}: {e}")
        finally:
            run.close_all()
        if plugin:
            loaded = broker.log().count(f"Loading plugin: {broker.plugin_path}")
            if not loaded:
                raise AssertionError(f"{name}: the broker log does not show the plugin loading")
        run.add("broker exit status", broker.stop())
        if plugin:
            # Guards against a vacuous pass: the file sink must have run.
            events = sum(len(read_events(f)) for f in workdir.glob("events*.jsonl"))
            if not events:
                raise AssertionError(f"{name}: the plugin's file sink wrote no events")
        return run.lines

    def differential(self, config: Config, placements: Sequence[str] = ("first",),
                     variant: str = "", known_difference: str = "") -> None:
        """Run the baseline and one plugin broker per placement ("first":
        our plugin before the other plugins, "last": after them) in
        parallel and compare each transcript with the baseline.

        ``known_difference`` names a reported plugin bug this configuration
        reproduces: the test is then skipped with that reason and the head
        of the diff, and fails once the difference is gone, so that the
        marker gets removed when the plugin is fixed.
        """
        have_plugin = os.path.isfile(plugin_path())
        sides = [("baseline", False, "first")]
        if have_plugin:
            sides += [(f"plugin-{p}", True, p) for p in placements]
        else:
            sides += [("baseline-again", False, "first")]
        name = self._testMethodName.replace("test_", "") + (f"-{variant}" if variant else "")
        with concurrent.futures.ThreadPoolExecutor(len(sides)) as pool:
            futures = [pool.submit(self._run_side, config, f"{name}-{label}", plugin, placement)
                       for label, plugin, placement in sides]
            transcripts = [f.result() for f in futures]
        out_dir = os.environ.get("EH_TRANSCRIPT_DIR")
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
            for (label, _, _), lines in zip(sides, transcripts):
                Path(out_dir, f"{name}-{label}.txt").write_text("\n".join(lines) + "\n")
        base = transcripts[0]
        self.assertGreater(len(base), 50, "the script recorded almost nothing")
        differences = []
        for (label, plugin, _), lines in zip(sides[1:], transcripts[1:]):
            if lines != base:
                diff = list(difflib.unified_diff(
                    base, lines, f"{name} without plugin", f"{name} {label}",
                    n=3, lineterm=""))
                differences.append((label, plugin, diff))
        if known_difference and have_plugin:
            if not any(plugin for _, plugin, _ in differences):
                self.fail(f"{name}: the known difference ({known_difference}) no longer "
                          f"reproduces: remove known_difference= from this test")
            label, _, diff = next(d for d in differences if d[1])
            head = "\n".join(diff[:14])
            raise unittest.SkipTest(f"KNOWN TRANSPARENCY DIFFERENCE, reported: "
                                    f"{known_difference}\n{head}\n...")
        for label, _, diff in differences:
            with self.subTest(side=label):
                limit = int(os.environ.get("EH_DIFF_LINES", "400"))
                if len(diff) > limit:
                    diff = diff[:limit] + [f"... {len(diff) - limit} more diff lines "
                                           f"(EH_DIFF_LINES, EH_TRANSCRIPT_DIR)"]
                self.fail(f"{name}: {label} answered differently from the "
                          f"plugin-free broker:\n" + "\n".join(diff))
        if not have_plugin:
            self.skipTest(f"plugin side skipped: {plugin_path()} not built; the scenarios "
                          f"were checked against a second plugin-free broker "
                          f"({len(base)} transcript lines identical)")

    # -- configurations --------------------------------------------------------

    def test_a_anonymous_no_password_file(self):
        # Debian's stock security; the listener line makes allow_anonymous
        # default to false, so it is set explicitly.
        self.differential(Config(lambda d: {"conf_lines": COMMON + ["allow_anonymous true"]},
                                 lambda r: run_round(r, r.broker.port, "s", will_delay=True)))

    def test_b_anonymous_and_password_file(self):
        def setup(d):
            pw = write_password_file(d / "passwd", PASSWORDS)
            return {"conf_lines": COMMON + ["allow_anonymous true", f"password_file {pw}"]}
        self.differential(Config(setup, default_script))

    def test_c_password_file_only(self):
        def setup(d):
            pw = write_password_file(d / "passwd", PASSWORDS)
            return {"conf_lines": COMMON + ["allow_anonymous false", f"password_file {pw}"]}
        self.differential(Config(setup, default_script))

    def test_d_password_file_and_acl_file(self):
        # check_retain_source makes the broker re-check a retained message's
        # publisher through the ACL chain with a fake, socketless client.
        def setup(d):
            pw = write_password_file(d / "passwd", PASSWORDS)
            (d / "acl").write_text(ACL)
            return {"conf_lines": COMMON + ["allow_anonymous true", f"password_file {pw}",
                                            f"acl_file {d / 'acl'}", "check_retain_source true"]}
        self.differential(Config(setup, default_script))

    def test_e_acl_file_only(self):
        def setup(d):
            (d / "acl").write_text(ACL)
            return {"conf_lines": COMMON + ["allow_anonymous true", f"acl_file {d / 'acl'}"]}
        self.differential(Config(setup, lambda r: run_round(r, r.broker.port, "s",
                                                            will_delay=True)))

    def test_f_dynamic_security(self):
        def setup(d):
            ds = write_dynsec(d / "dynsec.json")
            return {"conf_lines": COMMON + ["allow_anonymous true"],
                    "other_plugins": [(DYNSEC_PLUGIN, {"config_file": ds})]}

        def script(r: Run) -> None:
            run_round(r, r.broker.port, "f1")
            r.reload("reload (dynsec: plugins keep their state)")
            run_round(r, r.broker.port, "f2", (MQTTV5,))
            dynsec_kick_stage(r, r.broker.port, "f3")
        self.differential(Config(setup, script))

    def test_g_per_listener_settings(self):
        # Listener 0: anonymous, no security provider at all; listener 1:
        # password_file + acl_file.  Our plugin is loaded in both blocks.
        def setup(d):
            pw = write_password_file(d / "passwd", PASSWORDS)
            (d / "acl").write_text(ACL)
            return {"conf_lines": ["per_listener_settings true"] + COMMON,
                    "listeners": [["allow_anonymous true"],
                                  ["allow_anonymous false", f"password_file {pw}",
                                   f"acl_file {d / 'acl'}"]]}

        def script(r: Run) -> None:
            run_round(r, r.broker.ports[0], "g0", will_delay=True)
            run_round(r, r.broker.ports[1], "g1")
            state0 = prepare_across_reload(r, r.broker.ports[0], "g0keep")
            state1 = prepare_across_reload(r, r.broker.ports[1], "g1keep")
            r.reload("reload (per-listener)")
            check_across_reload(r, r.broker.ports[0], "g0keep", state0)
            check_across_reload(r, r.broker.ports[1], "g1keep", state1)
            run_round(r, r.broker.ports[0], "g0r", (MQTTV311,))
            run_round(r, r.broker.ports[1], "g1r", (MQTTV5,))

            # Listener 0 closes; listener 1 opens to anonymous clients and
            # drops its acl_file line (on reload an existing listener keeps
            # a security file whose line is removed).
            pw = r.dir / "passwd"
            r.reload("reload 2 (per-listener): listener 0 closed, listener 1 without acl line",
                     listeners=[["allow_anonymous false"],
                                ["allow_anonymous true", f"password_file {pw}"]])
            run_round(r, r.broker.ports[0], "g0s", (MQTTV5,))
            run_round(r, r.broker.ports[1], "g1s", (MQTTV311,))
            r.reload("reload 3 (per-listener): listener 0 open again",
                     listeners=[["allow_anonymous true"],
                                ["allow_anonymous true", f"password_file {pw}"]])
            run_round(r, r.broker.ports[0], "g0t", (MQTTV311,))
        self.differential(Config(setup, script))

    def test_h_plugin_before_and_after_dynsec(self):
        # dynsec knows alice and carol; password_file knows alice and bob:
        # the BASIC_AUTH chain is dynsec then password_file, and only
        # dynsec answers ACL checks.
        def setup(d):
            ds = write_dynsec(d / "dynsec.json", with_bob=False)
            pw = write_password_file(d / "passwd", PASSWORDS)
            return {"conf_lines": COMMON + ["allow_anonymous true", f"password_file {pw}"],
                    "other_plugins": [(DYNSEC_PLUGIN, {"config_file": ds})]}
        self.differential(Config(setup, default_script), placements=("first", "last"))

    def test_i_reload(self):
        # Stages: (0) no security at all; (1) reload adding password_file and
        # acl_file; (2) reload without changes; (3) reload after both files
        # changed; (4) reload removing both lines again.  Clients connected
        # and durable sessions offline across every reload.
        def setup(d):
            return {"conf_lines": COMMON + ["allow_anonymous true"]}

        def script(r: Run) -> None:
            port = r.broker.port
            pw = write_password_file(r.dir / "passwd", PASSWORDS)
            acl = r.dir / "acl"
            acl.write_text(ACL)
            secured = COMMON + ["allow_anonymous true", f"password_file {pw}", f"acl_file {acl}",
                                "check_retain_source true"]

            run_round(r, port, "i0")
            state = prepare_across_reload(r, port, "i0keep")
            r.reload("reload 1: add password_file and acl_file", conf_lines=secured)
            check_across_reload(r, port, "i0keep", state)
            run_round(r, port, "i1")

            state = prepare_across_reload(r, port, "i1keep")
            r.reload("reload 2: unchanged")
            check_across_reload(r, port, "i1keep", state)
            run_round(r, port, "i2", (MQTTV5,))

            state = prepare_across_reload(r, port, "i2keep")
            write_password_file(pw, PASSWORDS_CHANGED)
            acl.write_text(ACL_CHANGED)
            r.reload("reload 3: password and ACL files changed")
            check_across_reload(r, port, "i2keep", state)
            run_round(r, port, "i3")

            state = prepare_across_reload(r, port, "i3keep")
            r.reload("reload 4: security lines removed", conf_lines=COMMON + ["allow_anonymous true"])
            check_across_reload(r, port, "i3keep", state)
            run_round(r, port, "i4", (MQTTV311,))

            # No provider at all while allow_anonymous flips: what the
            # plugin learnt at startup or at the last reload must follow.
            state = prepare_across_reload(r, port, "i4keep")
            r.reload("reload 5: allow_anonymous false", conf_lines=COMMON + ["allow_anonymous false"])
            check_across_reload(r, port, "i4keep", state)
            run_round(r, port, "i5", (MQTTV5,))
            r.reload("reload 6: allow_anonymous line removed (listener: default false)",
                     conf_lines=COMMON)
            run_round(r, port, "i6", (MQTTV311,))
            r.reload("reload 7: allow_anonymous true again",
                     conf_lines=COMMON + ["allow_anonymous true"])
            run_round(r, port, "i7", (MQTTV5,))
        self.differential(Config(setup, script))

    def test_j_local_only_mode_with_port_option(self):
        # Debian's stock security: no listener line and no allow_anonymous,
        # so the broker runs in local only mode, where allow_anonymous
        # defaults to true.  The port comes from -p (the stock command line
        # has none and binds 1883, which a test cannot count on); 2.0.11
        # still starts in local only mode and accepts any username.
        # (The plugin once took -p for a listener line and refused clients
        # sending a username here.)
        def script(r: Run) -> None:
            run_round(r, r.broker.port, "j")
            r.reload("reload (local only mode)")
            run_round(r, r.broker.port, "j2", (MQTTV5,))
        self.differential(Config(lambda d: {"conf_lines": COMMON, "local_only": True}, script))

    def test_k_config_file_variants(self):
        # One effective security setting written in ways a plugin that reads
        # mosquitto.conf itself could get wrong.
        def include_dir(d):
            conf_d = d / "broker" / "conf.d"
            conf_d.mkdir(parents=True)
            (conf_d / "05-first.conf").write_text("allow_anonymous false\n")
            (conf_d / "10-security.conf").write_text("allow_anonymous true\n")
            (conf_d / "20-ignored.txt").write_text("allow_anonymous false\n")
            return {"conf_lines": COMMON + ["include_dir conf.d"], "relative_config": True}

        variants = {
            "include-dir-relative-config": include_dir,
            "in-listener-block": lambda d: {"conf_lines": COMMON,
                                            "listeners": [["allow_anonymous true"]]},
            "last-line-wins": lambda d: {"conf_lines": COMMON + ["allow_anonymous false",
                                                                 "allow_anonymous true"]},
            "whitespace-and-crlf": lambda d: {"conf_lines": COMMON + [
                "   allow_anonymous  true  \r"]},
            # A listener line without allow_anonymous: everyone is refused.
            "unset-with-listener": lambda d: {"conf_lines": COMMON},
            # Without per_listener_settings the last allow_anonymous wins,
            # whichever listener block it is in.
            "two-listeners": lambda d: {"conf_lines": COMMON, "listeners": [
                ["allow_anonymous false"], ["allow_anonymous true"]]},
            "per-listener-comment": lambda d: {
                "conf_lines": ["per_listener_settings true # set by the test"] + COMMON,
                "listeners": [["allow_anonymous true"]]},
        }
        def include_dir_reloads(r: Run) -> None:
            # The included files change between reloads: the plugin must
            # re-read them (relative to the broker's working directory).
            security = r.dir / "broker" / "conf.d" / "10-security.conf"
            run_round(r, r.broker.port, "k", (MQTTV5,))
            security.write_text("allow_anonymous false\n")
            r.reload("reload: included file now says allow_anonymous false")
            run_round(r, r.broker.port, "k2", (MQTTV311,))
            security.write_text("allow_anonymous true\n")
            r.reload("reload: included file says allow_anonymous true again")
            run_round(r, r.broker.port, "k3", (MQTTV5,))

        for variant, setup in variants.items():
            script = (include_dir_reloads if variant == "include-dir-relative-config" else
                      lambda r: run_round(r, r.broker.port, "k", (MQTTV5,)))
            with self.subTest(variant=variant):
                self.differential(Config(setup, script), variant=variant)

    def test_l_trailing_comments(self):
        # For a boolean the broker reads the first word after the key and
        # ignores the rest of the line, so a trailing comment is harmless.
        # (Both variants once made the plugin refuse clients sending a
        # username: its config reader compared the whole rest of the line.)
        variants = {
            "allow-anonymous": {"conf_lines": COMMON + ["allow_anonymous true # local clients"]},
            # Two listeners: 0 anonymous without any provider, 1 closed.
            "per-listener-settings": {
                "conf_lines": ["per_listener_settings true # one policy per port"] + COMMON,
                "listeners": [["allow_anonymous true"], ["allow_anonymous false"]]},
        }
        for variant, spec in variants.items():
            with self.subTest(variant=variant):
                self.differential(Config(lambda d, spec=spec: dict(spec),
                                         lambda r: run_round(r, r.broker.port, "l")),
                                  variant=variant)

    def test_m_per_listener_plugin_placement(self):
        # per_listener_settings: another plugin, or ours, loaded in only one
        # listener block.  Listener 1 has no security provider of its own.
        def dynsec_listener0(d):
            ds = write_dynsec(d / "dynsec.json")
            return {"conf_lines": ["per_listener_settings true"] + COMMON,
                    "listeners": [["allow_anonymous true"], ["allow_anonymous true"]],
                    "listener_plugins": [[(DYNSEC_PLUGIN, {"config_file": ds}), "eventhook"],
                                         ["eventhook"]]}

        def ours_listener1(d):
            pw = write_password_file(d / "passwd", PASSWORDS)
            return {"conf_lines": ["per_listener_settings true"] + COMMON,
                    "listeners": [["allow_anonymous true", f"password_file {pw}"],
                                  ["allow_anonymous true"]],
                    "listener_plugins": [[], ["eventhook"]]}

        def script(r: Run) -> None:
            run_round(r, r.broker.ports[0], "m0", (MQTTV5,))
            run_round(r, r.broker.ports[1], "m1")

        with self.subTest(variant="ours-in-listener-1-only"):
            self.differential(Config(ours_listener1, script), variant="ours-in-listener-1-only")
        with self.subTest(variant="dynsec-in-listener-0-only"):
            # Regression: dynsec in listener 0 used to count for listener 1
            # too, which then had only deferring callbacks (CONNACK 5/135,
            # SUBACK 0x80/135 where the broker alone grants everything).
            self.differential(Config(dynsec_listener0, script), variant="dynsec-in-listener-0-only")

    def test_n_legacy_and_unknown_plugins(self):
        # The design table's "other plugin" rows, with plugins compiled for
        # the test: a legacy v4 ACL plugin, a v4 plugin that also checks
        # passwords, and a v5 plugin of unknown capability that defers all.
        def legacy(with_unpwd: bool, extra: Sequence[str]):
            def setup(d):
                so = build_helper_plugin(d, "legacy", LEGACY_PLUGIN_C,
                                         *(["WITH_UNPWD"] if with_unpwd else []))
                lines = list(extra)
                if "password_file" in " ".join(extra):
                    lines = [f"password_file {write_password_file(d / 'passwd', PASSWORDS)}"
                             if l == "password_file" else l for l in extra]
                return {"conf_lines": COMMON + lines + [f"auth_plugin {so}"]}
            return setup

        def unknown(d):
            so = build_helper_plugin(d, "deferring", DEFERRING_PLUGIN_C)
            return {"conf_lines": COMMON + ["allow_anonymous true"], "other_plugins": [so]}

        script = lambda r: run_round(r, r.broker.port, "n", (MQTTV5,))  # noqa: E731
        variants = [
            ("v4-acl-anonymous", legacy(False, ["allow_anonymous true"]), ("first",)),
            ("v4-acl-password-file", legacy(False, ["allow_anonymous false", "password_file"]),
             ("first",)),
            ("v4-auth-anonymous", legacy(True, ["allow_anonymous true"]), ("first",)),
            ("v4-auth-closed", legacy(True, ["allow_anonymous false"]), ("first",)),
            ("unknown-v5-plugin", unknown, ("first", "last")),
        ]
        for variant, setup, placements in variants:
            with self.subTest(variant=variant):
                self.differential(Config(setup, script), placements, variant=variant)



class BrokerHeapTest(BrokerTestCase):
    """The messages the plugin publishes into the broker (the local sink's
    events, the $SYS/broker/eventhook counters) must keep the broker's own
    heap accounting right.  Mosquitto 2.0.11's mosquitto_broker_publish_copy
    takes its copy from an allocator the accounting never saw and the broker
    frees it through the accounting, so every such message lowered
    $SYS/broker/heap/current until it wrapped, and with memory_limit the
    broker then refused its own allocations and dropped clients."""

    CLIENTS = 60

    def test_local_sink_keeps_heap_count_and_memory_limit(self):
        b = self.start_broker(["allow_anonymous true", "memory_limit 50000000", "sys_interval 1"],
                              plugin_opts=[("events", "*"), ("local_topic", "$events/{event}/{clientid}"),
                                           ("stats_interval", "1")])
        viewer = h.RawClient(b.port, "viewer")
        self.assertEqual(viewer.connect().rc, 0)
        viewer.subscribe(["$events/#", "$SYS/broker/eventhook/local/delivered"])
        answers = []
        for i in range(self.CLIENTS):
            c = h.RawClient(b.port, f"heap{i:03d}")
            answers.append((c.connect().rc, c.publish("heap/t", b"x" * 200, qos=1)))
            c.disconnect()
        # Every client was accepted and its publish acknowledged, as without
        # the plugin: no allocation of the broker's failed.
        self.assertEqual(answers, [(0, 0)] * self.CLIENTS)
        last = f"$events/client.disconnected/heap{self.CLIENTS - 1:03d}"
        viewer.wait_messages(lambda m: any(x.topic == last for x in m))
        # The counter messages came through the same path too.
        viewer.wait_messages(lambda m: any(x.topic == "$SYS/broker/eventhook/local/delivered" for x in m))
        # A heap count published after all of that: the broker's whole heap
        # here is well under 50 MB; a wrapped count is near 2**64.
        probe = h.RawClient(b.port, "probe")
        probe.connect()
        probe.subscribe("$SYS/broker/heap/current")
        heap = int(probe.wait_messages(1)[0].payload)
        self.assertLess(heap, 50_000_000)
        self.assertGreater(heap, 0)
        self.assertNotIn("Out of memory", b.log())
        probe.close()
        viewer.close()


if __name__ == "__main__":
    unittest.main()
