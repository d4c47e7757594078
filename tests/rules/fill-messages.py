#!/usr/bin/env python3
"""Fills `message: TBD` placeholders in a PolicyTest file with the messages podbridge actually
gives, for a policy author to review (like `policy test --update` does for objects)."""
import re
import subprocess
import sys

test_file = sys.argv[1]
report = subprocess.run(["target/debug/podbridge", "policy", "test", test_file],
                        capture_output=True, text=True).stdout
actual = {}
case = None
lines = report.splitlines()
for index, line in enumerate(lines):
    m = re.match(r"FAIL  \S+ / (\S+)", line)
    if m:
        case = m.group(1)
    if case and line.strip() == "+++ actual":
        body = []
        for following in lines[index + 2:]:
            stripped = following[6:] if following.startswith("      ") else following
            if stripped.startswith("+"):
                body.append(stripped[1:])
            elif stripped.startswith("\\") or stripped.startswith("-") or stripped.startswith("@@"):
                continue
            else:
                break
        actual[case] = "\n".join(body)
text = open(test_file).read()
out = []
current = None
for line in text.splitlines():
    m = re.match(r"\s*- name: (\S+)", line)
    if m:
        current = m.group(1)
    if "message: TBD" in line and current in actual:
        indent = line[: len(line) - len(line.lstrip())]
        status = re.search(r"status: (\d+)", line).group(1)
        out.append(f"{indent}error:")
        out.append(f"{indent}  status: {status}")
        out.append(f"{indent}  message: |-")
        for message_line in actual[current].splitlines():
            out.append(f"{indent}    {message_line}")
        continue
    out.append(line)
open(test_file, "w").write("\n".join(out) + "\n")
