#!/usr/bin/env python3
"""A fake ``efibootmgr`` for tests: EFI variables kept in a JSON file.

The file is named by the environment variable ``FAKE_EFIBOOTMGR_STATE`` and holds
``{"current": "0001", "next": null, "order": ["0001", "0002"], "timeout": 3,
"entries": {"0001": {"label": "system0", "active": true, "path": "HD(...)"}}, "calls": [[...]]}``.
Supported: no arguments / ``-v``, ``-n/--bootnext``, ``-N/--delete-bootnext``, ``-o/--bootorder``,
``-O/--delete-bootorder``, ``-c/--create`` and ``-C/--create-only`` with ``-d -p -L -l -u``, ``-q``.
Output follows efibootmgr 18 (BootNext, BootCurrent, Timeout, BootOrder, entries with the device
path after a TAB). Every invocation's argv is appended to ``calls``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def install(tmp_path: Path, monkeypatch: Any, state: dict[str, Any]) -> Path:
    """Put this fake efibootmgr first on PATH (via monkeypatch) with STATE; return the state file."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "efibootmgr"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {Path(__file__).resolve()} \"$@\"\n")
    wrapper.chmod(0o755)
    state_file = tmp_path / "efivars.json"
    state_file.write_text(json.dumps(state))
    monkeypatch.setenv("FAKE_EFIBOOTMGR_STATE", str(state_file))
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    monkeypatch.delenv("PYRAUC_EFIBOOTMGR", raising=False)
    return state_file


def load(path: Path) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    state.setdefault("current", None)
    state.setdefault("next", None)
    state.setdefault("order", [])
    state.setdefault("timeout", 3)
    state.setdefault("entries", {})
    state.setdefault("calls", [])
    return state


def show(state: dict[str, Any]) -> str:
    out = []
    if state["next"]:
        out.append(f"BootNext: {state['next']}")
    if state["current"]:
        out.append(f"BootCurrent: {state['current']}")
    out.append(f"Timeout: {state['timeout']} seconds")
    if state["order"] is not None:
        out.append("BootOrder: " + ",".join(state["order"]))
    for number in sorted(state["entries"]):
        e = state["entries"][number]
        star = "*" if e.get("active", True) else " "
        out.append(f"Boot{number}{star} {e['label']}\t{e.get('path', 'HD(1,GPT,0,0x800,0x1000)')}")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    path = Path(os.environ["FAKE_EFIBOOTMGR_STATE"])
    state = load(path)
    state["calls"].append(argv)
    p = argparse.ArgumentParser(prog="efibootmgr", add_help=False)
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-n", "--bootnext")
    p.add_argument("-N", "--delete-bootnext", action="store_true")
    p.add_argument("-o", "--bootorder")
    p.add_argument("-O", "--delete-bootorder", action="store_true")
    p.add_argument("-c", "--create", action="store_true")
    p.add_argument("-C", "--create-only", action="store_true")
    p.add_argument("-d", "--disk", default="/dev/sda")
    p.add_argument("-p", "--part", default="1")
    p.add_argument("-L", "--label", default="Linux")
    p.add_argument("-l", "--loader", default="\\EFI\\redhat\\grub.efi")
    p.add_argument("-u", "--unicode")
    try:
        args = p.parse_args(argv)
    except SystemExit:
        return 1
    entries = state["entries"]
    rc = 0
    if args.bootnext is not None:
        number = args.bootnext.upper().zfill(4)
        if number not in entries:
            print(f"Boot entry {number} does not exist", file=sys.stderr)
            rc = 1
        else:
            state["next"] = number
    if args.delete_bootnext:
        state["next"] = None
    if args.bootorder is not None:
        order = [x.upper().zfill(4) for x in args.bootorder.split(",") if x]
        missing = [x for x in order if x not in entries]
        if missing:
            print(f"Invalid BootOrder order entry value{missing[0]}", file=sys.stderr)
            rc = 1
        else:
            state["order"] = order
    if args.delete_bootorder:
        state["order"] = []
    if args.create or args.create_only:
        number = next(f"{i:04X}" for i in range(0x10000) if f"{i:04X}" not in entries)
        entries[number] = {"label": args.label, "active": True,
                           "path": f"HD({args.part},GPT,disk={args.disk})/File({args.loader})"
                                   + (f"{args.unicode}" if args.unicode else ""),
                           "disk": args.disk, "part": args.part, "loader": args.loader,
                           "unicode": args.unicode}
        if args.create:
            state["order"] = [number, *list(state["order"])]
    path.write_text(json.dumps(state, indent=1))
    if rc == 0 and not args.quiet:
        sys.stdout.write(show(state))
    return rc


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
