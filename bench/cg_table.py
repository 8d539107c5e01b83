"""Helper of bench/callgrind.sh: reads one callgrind run (raw file for the
totals, callgrind_annotate --inclusive=yes --tree=caller output for the
callbacks) and appends a JSON line to the report; --report prints the
tables."""
import json
import os
import re
import sys

CALLBACKS = [("on_basic_auth", "BASIC_AUTH"), ("auth_tail", "BASIC_AUTH (tail)"), ("on_acl_check", "ACL_CHECK"),
             ("acl_tail", "ACL_CHECK (tail)"), ("on_message", "MESSAGE"), ("on_disconnect", "DISCONNECT"),
             ("on_tick", "TICK")]
ALLOC = ("malloc", "calloc", "realloc")
LINE = re.compile(r"^\s*([\d,]+) \([\d. %]+\)\s+([<*])\s+(\S+?):(\S+?)(?: \((\d[\d,]*)x\))?(?: \[(.*)\])?$")


def parse(name, how, raw, annotated, log, cycles):
    total = 0
    for line in open(raw):
        if line.startswith(("totals:", "summary:")):
            total = max(total, int(line.split()[1]))
    cost, alloc = {}, []
    published = 0  # messages the local sink handed to the broker
    for block in open(annotated).read().split("\n\n"):
        callers, target = [], None
        for line in block.splitlines():
            m = LINE.match(line)
            if not m:
                continue
            ir, kind, _file, fn, calls, obj = m.groups()
            ir = int(ir.replace(",", ""))
            calls = int(calls.replace(",", "")) if calls else 0
            if kind == "<":
                callers.append((fn, ir, calls, obj or ""))
            else:
                target = fn.split("@")[0]
        if not target:
            continue
        # Count the arcs from the broker into the callback (not recursion
        # through our own code).
        if target in dict(CALLBACKS):
            ext = [c for c in callers if c[0] not in dict(CALLBACKS)]
            c = cost.setdefault(target, [0, 0])
            c[0] += sum(x[1] for x in ext)
            c[1] += sum(x[2] for x in ext)
        if target == "mosquitto_broker_publish":
            published += sum(c[2] for c in callers)
        if target in ALLOC:
            alloc += [(target, c[0], c[1], c[2]) for c in callers if c[1]]
    enqueued = {}
    for m in re.finditer(r"eventhook: (\w+): stopped; enqueued (\d+), delivered (\d+), failed (\d+), dropped (\d+)",
                         open(log).read()):
        enqueued[m.group(1)] = {"enqueued": int(m.group(2)), "dropped": int(m.group(5))}
    return {"name": name, "how": how, "total": total, "cycles": cycles, "cost": cost, "alloc": alloc,
            "sinks": enqueued, "published": published}


def report(path, cycles_asked):
    runs = [json.loads(l) for l in open(path)]
    whole = {r["name"]: r for r in runs if r["how"] == "whole"}
    base = whole.get("none")
    batched = "local batched ($events/all, local_batch_max 1000, local_batch_linger_ms %s)" % os.environ.get(
        "CG_LINGER", "5")
    labels = {"none": "no plugin", "idle": "plugin, no sink interested",
              "file": "file sink, events *", "filelocal": "file + local sinks, events *",
              "fourrings": "file, http, kafka, mqtt sinks (peers unreachable), events *",
              "every": "all five sinks (peers unreachable), events *",
              "filelocalbatch": "file + local sinks, %s, events *" % batched,
              "everybatch": "all five sinks, %s, events *" % batched}
    load = os.environ.get("CG_LOAD")
    print("## Broker main thread, instructions per cycle (callgrind, %s cycles of %s, %s-byte payloads%s)"
          % (cycles_asked, "loadgen " + load if load else
             "connect, subscribe, 4 x QoS 1 publish, unsubscribe, disconnect", os.environ.get("CG_PAYLOAD", "32"),
             "; copies over 2 KiB counted as glibc's vector loop (CG_COPY=loop)"
             if os.environ.get("CG_COPY") == "loop" else ""))
    print()
    print("| configuration | Ir per cycle | vs no plugin | plugin callbacks Ir per cycle | events enqueued per cycle |")
    print("|---|---|---|---|---|")
    for name, r in whole.items():
        per = r["total"] / r["cycles"]
        cb = sum(v[0] for v in r["cost"].values()) / r["cycles"]
        enq = sum(s["enqueued"] for s in r["sinks"].values()) / r["cycles"]
        print("| %s | %.0f | %s | %.0f | %.1f |" % (labels.get(name, name), per,
                                                     "%.3f" % (per / (base["total"] / base["cycles"])) if base else "-",
                                                     cb, enq))
    print()
    for name, r in whole.items():
        local = r["sinks"].get("local", {}).get("enqueued", 0)
        if local:
            # Under valgrind a linger collects fewer events than at full
            # speed (bench/local_batches.py measures those): CG_LINGER.
            # The events are the stop line's, the messages those up to the
            # dump, so a last message after it makes the figure a little high.
            print("%s: the local sink published %d messages for %d events%s."
                  % (labels.get(name, name), r.get("published", 0), local,
                     ", about %.1f events per message" % (local / r["published"]) if r.get("published") else ""))
    print()
    print("Ir per cycle includes everything the broker's thread executes in user space (the broker, libc, "
          "the plugin); system calls are not counted, so the ratio overstates the plugin's share of CPU time.")
    print()
    for name, r in whole.items():
        if name == "none":
            continue
        print("### Per callback: %s" % labels.get(name, name))
        print()
        print("| callback | calls | Ir inclusive | Ir per call |")
        print("|---|---|---|---|")
        tot = 0
        for fn, label in CALLBACKS:
            ir, calls = r["cost"].get(fn, (0, 0))
            tot += ir
            print("| %s | %d | %d | %.0f |" % (label, calls, ir, ir / calls if calls else 0))
        enq = sum(s["enqueued"] for s in r["sinks"].values())
        drop = sum(s["dropped"] for s in r["sinks"].values())
        if enq:
            print("\nAll callbacks: %d Ir for %d events enqueued (%d dropped) over all sinks: %.0f Ir per enqueued "
                  "event." % (tot, enq, drop, tot / enq))
        else:
            print("\nAll callbacks: %d Ir, nothing enqueued: %.0f Ir per cycle." % (tot, tot / r["cycles"]))
        print()
    for r in runs:
        if r["how"] != "toggle":
            continue
        print("### Heap allocations inside the callbacks (collection on only inside them; %s, %d cycles)"
              % ("file sink, events *" if r["name"] == "allocs" else "file + local sinks, events *", r["cycles"]))
        print()
        print("| allocator | called from | Ir inside callbacks | calls on that arc (whole run) |")
        print("|---|---|---|---|")
        for fn, caller, ir, calls in r["alloc"]:
            print("| %s | %s | %d | %d |" % (fn, caller, ir, calls))
        if not r["alloc"]:
            print("| - | - | 0 | 0 |")
        print()


if __name__ == "__main__":
    if sys.argv[1] == "--report":
        report(sys.argv[2], sys.argv[3])
    else:
        name, how, raw, annotated, log, cycles = sys.argv[1:7]
        print(json.dumps(parse(name, how, raw, annotated, log, int(cycles))))
