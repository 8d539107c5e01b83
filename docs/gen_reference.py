#!/usr/bin/python3
"""Writes the option reference generated from the option tables (by
build/eh_optdoc) into docs/configuration.md between the GENERATED markers.
With --check, only verifies that the file is current (used by make check),
so the reference cannot drift from what the parser accepts."""
import os
import subprocess
import sys

BEGIN = "<!-- BEGIN GENERATED OPTIONS: make docs -->"
END = "<!-- END GENERATED OPTIONS -->"
DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configuration.md")


def main():
    args = sys.argv[1:]
    check = "--check" in args
    args = [a for a in args if a != "--check"]
    if len(args) != 1:
        print("usage: gen_reference.py [--check] path/to/eh_optdoc", file=sys.stderr)
        return 2
    table = subprocess.run([args[0], "--markdown"], check=True, capture_output=True, text=True).stdout
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        print(f"{DOC}: the GENERATED markers are missing", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = head + BEGIN + "\n\n" + table + END + tail
    if check:
        if new != text:
            print("docs/configuration.md is out of date with the option tables: run `make docs`",
                  file=sys.stderr)
            return 1
        print("docs/configuration.md: current")
        return 0
    if new != text:
        with open(DOC, "w", encoding="utf-8") as f:
            f.write(new)
        print("docs/configuration.md: updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
