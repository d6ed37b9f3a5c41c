"""The event log: RAUC's events, the four formats parsed back, rotation at max-size, config checks."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pyrauc import eventlog
from pyrauc.config import parse_config
from pyrauc.errors import ConfigError
from pyrauc.eventlog import EventLog, FileLogger

NOW = datetime(2026, 3, 15, 18, 36, 8, tzinfo=UTC)
TXN = "8d4c1f2a-1111-2222-3333-444455556666"


def test_event_fields_in_rauc_order() -> None:
    started = eventlog.install_started(TXN)
    assert [k for k, _ in started.fields] == ["MESSAGE", "PRIORITY", "GLIB_DOMAIN", "RAUC_EVENT_TYPE", "MESSAGE_ID",
                                              "TRANSACTION_ID"]
    assert started.message == "Installation 8d4c1f2a started"
    done = eventlog.install_finished(TXN, bundle_hash="ab", version="1")
    assert [k for k, _ in done.fields] == ["MESSAGE", "MESSAGE_ID", "PRIORITY", "GLIB_DOMAIN", "RAUC_EVENT_TYPE",
                                           "BUNDLE_HASH", "BUNDLE_DESCRIPTION", "BUNDLE_VERSION", "TRANSACTION_ID"]
    assert done.get("BUNDLE_DESCRIPTION") == "" and done.get("MESSAGE_ID") == eventlog.ID_INSTALL_SUCCEEDED
    rejected = eventlog.install_finished(TXN, error="Compatible mismatch", rejected=True)
    assert rejected.message == "Installation 8d4c1f2a rejected: Compatible mismatch"
    assert rejected.get("MESSAGE_ID") == eventlog.ID_INSTALL_REJECTED
    failed = eventlog.install_finished(TXN, error="boom")
    assert (failed.message, failed.get("MESSAGE_ID")) == ("Installation 8d4c1f2a failed: boom",
                                                          eventlog.ID_INSTALL_FAILED)
    active = eventlog.marked("rootfs.1", "B", "active", "cafe")
    assert active.fields[-3:] == (("SLOT_NAME", "rootfs.1"), ("SLOT_BOOTNAME", "B"), ("BUNDLE_HASH", "cafe"))
    assert eventlog.marked("rootfs.1", "B", "good").get("BUNDLE_HASH") is None
    boot = eventlog.booted("rootfs.0", "A", "bid", None)
    assert boot.message == "Booted into rootfs.0 (A)" and boot.get("BUNDLE_HASH") == "unknown"
    assert eventlog.booted_external("bid").message == "Booted from external source"
    assert eventlog.service("Service started").type == "service"


def test_formats_parse_back() -> None:
    event = eventlog.booted("rootfs.1", "B", "0f6c2c1e", "5e9b")
    short = eventlog.format_event(event, "short", NOW)
    assert short == "2026-03-15T18:36:08Z: Booted into rootfs.1 (B)\n"
    readable = eventlog.format_event(event, "readable", NOW)
    assert readable.splitlines() == [
        "2026-03-15T18:36:08Z: Booted into rootfs.1 (B)",
        " " * 22 + "slot: rootfs.1",
        " " * 22 + "bootname: B",
        " " * 22 + "boot ID: 0f6c2c1e",
        " " * 22 + "bundle hash: 5e9b",
    ]
    line = eventlog.format_event(eventlog.install_started(TXN), "json", NOW)
    assert line == ('{"TS":"2026-03-15T18:36:08Z","MESSAGE":"Installation 8d4c1f2a started","PRIORITY":"5",'
                    '"GLIB_DOMAIN":"rauc-event","RAUC_EVENT_TYPE":"install",'
                    '"MESSAGE_ID":"b05410e8a93345389cd061aab1e9516d","TRANSACTION_ID":"' + TXN + '"}\n')
    pretty = eventlog.format_event(event, "json-pretty", NOW)
    assert pretty.startswith('{\n  "TS" : "2026-03-15T18:36:08Z",\n  "MESSAGE" : "Booted into rootfs.1 (B)",\n')
    assert json.loads(pretty) == json.loads(eventlog.format_event(event, "json", NOW))
    assert list(json.loads(pretty)) == ["TS", *(k for k, _ in event.fields)]


@pytest.mark.parametrize("fmt", eventlog.FORMATS)
def test_file_logger_all_formats(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "events.log"
    log = EventLog([FileLogger("x", str(path), ("install", "mark"), fmt)])
    log.emit(eventlog.install_started(TXN), NOW)
    log.emit(eventlog.service("Service started"), NOW)      # not taken by this logger
    log.emit(eventlog.marked("rootfs.1", "B", "good"), NOW)
    text = path.read_text()
    if fmt == "short":
        assert text.splitlines() == ["2026-03-15T18:36:08Z: Installation 8d4c1f2a started",
                                     "2026-03-15T18:36:08Z: Marked slot rootfs.1 as good"]
    elif fmt == "readable":
        assert text.splitlines()[1] == " " * 22 + f"transaction ID: {TXN}"
        assert text.splitlines()[2:] == ["2026-03-15T18:36:08Z: Marked slot rootfs.1 as good",
                                         " " * 22 + "slot: rootfs.1", " " * 22 + "bootname: B"]
    else:
        decoder = json.JSONDecoder()
        entries, pos = [], 0
        while text[pos:].strip():
            obj, end = decoder.raw_decode(text, pos)
            entries.append(obj)
            pos = end + 1
        assert [e["MESSAGE"] for e in entries] == ["Installation 8d4c1f2a started", "Marked slot rootfs.1 as good"]
        assert entries[1]["SLOT_NAME"] == "rootfs.1" and entries[0]["TS"] == "2026-03-15T18:36:08Z"
        if fmt == "json":
            assert len(text.splitlines()) == 2


def test_rotation_at_max_size(tmp_path: Path) -> None:
    path = tmp_path / "r.log"
    entry = eventlog.format_event(eventlog.service("Service started"), "short", NOW)
    logger = FileLogger("r", str(path), format="short", max_size=len(entry) * 2, max_files=3)
    log = EventLog([logger])
    for _ in range(7):
        log.emit(eventlog.service("Service started"), NOW)
    assert path.read_text() == entry
    assert (tmp_path / "r.log.1").read_text() == entry * 2
    assert (tmp_path / "r.log.2").read_text() == entry * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.log", "r.log.1", "r.log.2"]
    single = FileLogger("s", str(tmp_path / "s.log"), format="short", max_size=len(entry), max_files=1)
    EventLog([single]).emit(eventlog.service("a"), NOW)
    EventLog([single]).emit(eventlog.service("b"), NOW)
    assert (tmp_path / "s.log").read_text().endswith("b\n") and (tmp_path / "s.log.1").read_text().endswith("a\n")


def test_broken_logger_is_deactivated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    logger = FileLogger("b", str(tmp_path / "missing" / "x.log"))
    log = EventLog([logger])
    log.emit(eventlog.service("Service started"))
    assert logger.broken
    assert "Failed to open log file for appending: No such file or directory" in caplog.text
    assert "Deactivating broken logger b" in caplog.text
    log.emit(eventlog.service("Service started"))   # no second warning, no exception


BASE = "[system]\ncompatible=x\nbootloader=noop\n{system}\n[slot.rootfs.0]\ndevice=/dev/null\n\n"


@pytest.mark.parametrize(("group", "message"), [
    ("[log.a]\nfilename=a.log\n", "Relative filename requires data-directory to be set"),
    ("[log.a]\nfilename=/a.log\nevents=install;bogus\n", "Unsupported event log type 'bogus'"),
    ("[log.a]\nfilename=/a.log\nevents=all;mark\n", "Event type 'all' cannot be combined"),
    ("[log.a]\nfilename=/a.log\nformat=xml\n", "Unknown log format 'xml'"),
    ("[log.a]\nfilename=/a.log\nmax-files=0\n", "Value for 'max-files' must be >= 1"),
    ("[log.a]\nfilename=/a.log\nmax-files=1001\n", "Value of 1001 for 'max-files' looks implausible"),
])
def test_config_errors(group: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(BASE.format(system="") + group)


def test_config_logger() -> None:
    c = parse_config(BASE.format(system="data-directory=/data") + "[log.j]\nfilename=j.log\nformat=json-pretty\n"
                     "events=boot;service\nmax-size=1K\nmax-files=4\n")
    logger = EventLog.from_config(c).loggers[0]
    assert (logger.filename, logger.format, logger.events, logger.max_size, logger.max_files) == (
        "/data/j.log", "json-pretty", ("boot", "service"), 1024, 4)
