"""The same command lines against Debian's rauc 1.8 and pyrauc (invoked as ``rauc``).

For each invocation the exit code, which stream carries output and the first line(s) of each must
agree. GLib's log lines ("rauc-Message: ...") are diagnostics, not output, and are left out on both
sides (pyrauc prints its diagnostics in the same format). Where pyrauc follows current RAUC rather
than 1.8, the case says so and only the exit code and the streams are compared.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.bundles import error_lines, write_content
from tests.helpers.pki import Pki

pytestmark = pytest.mark.interop

COMMANDS = ("bundle", "resign", "convert", "encrypt", "replace-signature", "extract-signature", "extract",
            "install", "info", "mount", "service", "status", "write-slot")


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: list[str]
    stderr: list[str]


@dataclass
class Tools:
    """Run the same argv through rauc 1.8 and through pyrauc named ``rauc``."""

    rauc_bin: str
    pyrauc_as_rauc: Path
    cwd: Path
    subst: dict[str, str] = field(default_factory=dict)

    def _argv(self, argv: tuple[str, ...]) -> list[str]:
        out = []
        for a in argv:
            for key, value in self.subst.items():
                a = a.replace("{" + key + "}", value)
            out.append(a)
        return out

    def run(self, tool: str, argv: tuple[str, ...]) -> Result:
        exe = [self.rauc_bin] if tool == "rauc" else [str(self.pyrauc_as_rauc)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAUC_", "G_MESSAGES"))}
        proc = subprocess.run([*exe, *self._argv(argv)], capture_output=True, text=True, cwd=self.cwd, env=env,
                              stdin=subprocess.DEVNULL, timeout=120)
        return Result(proc.returncode, proc.stdout.splitlines(), error_lines(proc))


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory, rauc_bin: str, pki: Pki) -> Tools:
    d = tmp_path_factory.mktemp("cli")
    exe = d / "bin" / "rauc"
    exe.parent.mkdir()
    exe.write_text(f"#!{sys.executable}\nfrom pyrauc.cli import main\nraise SystemExit(main())\n")
    exe.chmod(0o755)
    conf = d / "system.conf"
    conf.write_text(f"[system]\ncompatible=Test Config\nbootloader=noop\ndata-directory={d}/data\n\n"
                    f"[keyring]\npath={pki.keyring}\n\n[slot.rootfs.0]\ndevice=/dev/null\n")
    content = write_content(d / "content", "verity")
    bundle = d / "b.raucb"
    subprocess.run([rauc_bin, "bundle", "--cert", str(pki.signer_direct.cert_path), "--key",
                    str(pki.signer_direct.key_path), str(content), str(bundle)], check=True, capture_output=True)
    subst = {"conf": str(conf), "bundle": str(bundle), "keyring": str(pki.keyring),
             "cert": str(pki.signer_direct.cert_path), "key": str(pki.signer_direct.key_path),
             "content": str(content), "other_keyring": str(pki.other_keyring), "dir": str(d)}
    # broken system.conf files, a keyring directory without hashed names, a tiny bundle
    for name, text in (("conf_key", "[system]\ncompatible=x\nbootloader=noop\nfoo=1\n"),
                       ("conf_nocompat", "[system]\nbootloader=noop\n"),
                       ("conf_syntax", "[system\ncompatible=x\n"),
                       ("conf_bootloader", "[system]\ncompatible=x\nbootloader=lilo\n"),
                       ("conf_nodevice", "[system]\ncompatible=x\nbootloader=noop\n[slot.rootfs.0]\ntype=ext4\n")):
        (d / f"{name}.conf").write_text(text)
        subst[name] = str(d / f"{name}.conf")
    ring_dir = d / "ring"
    ring_dir.mkdir()
    (ring_dir / "root.pem").write_bytes(pki.keyring.read_bytes())
    (d / "ring.conf").write_text(f"[system]\ncompatible=x\nbootloader=noop\n[keyring]\ndirectory={ring_dir}\n")
    subst.update(ring_conf=str(d / "ring.conf"), ring_dir=str(ring_dir))
    (d / "tiny.raucb").write_bytes(b"tiny")
    subst["tiny"] = str(d / "tiny.raucb")
    (d / "exists.cms").write_bytes(b"")
    subst["exists"] = str(d / "exists.cms")
    return Tools(rauc_bin, exe, d, subst)


def _collapse(line: str) -> str:
    """1.8 separates ``rauc info`` labels and values with tabs, current RAUC with spaces."""
    return " ".join(line.split())


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    stdout_lines: int = 1           # how many leading stdout lines must agree
    stderr_lines: int = 1
    differs: str | None = None      # why 1.8 differs: then only exit code and streams are compared
    line: Callable[[str], str] = str


def case(*argv: str, **kw: object) -> Case:
    return Case(argv, **kw)  # type: ignore[arg-type]


# usage, help and parse errors -----------------------------------------------------------------
HELP = [case(c, "--help", stdout_lines=4) for c in COMMANDS] + [
    case("--help", "info", stdout_lines=4), case("-h", "bundle", stdout_lines=4),
    case("extract", "-h", stdout_lines=4), case("info", "--help", "some-file", stdout_lines=4),
    case("--help", stdout_lines=3), case("-h", stdout_lines=3),
]
USAGE = [
    case(stdout_lines=3),                                     # no command: main help, exit 1
    case("--foo", stdout_lines=3),                            # unknown option, no command: the same
    case("--keyring", "x", stdout_lines=3),                   # x is --keyring's value: still no command
    case("frobnicate", stdout_lines=3),
    case("frobnicate", "--bar", stdout_lines=3),
    case("info", "--foo", "x", stdout_lines=4),               # "Unknown option --foo" + the command's help
    case("--foo", "info", "x", stdout_lines=4),
    case("info", "-x", stdout_lines=4),
    case("bundle", "--bogus", "a", "b", stdout_lines=4),
    case("encrypt", "--nope", "a", "b", stdout_lines=4),
    case("info", "-cfoo", "x", stdout_lines=4),
    case("info", "--keyring"), case("info", "-c"), case("bundle", "a", "b", "--cert"),
    case("help"),
    case("-d", stdout_lines=3),
]
ARGUMENTS = [
    case("info"), case("bundle"), case("bundle", "a"), case("bundle", "a", "b"), case("resign"),
    case("resign", "a"), case("extract"), case("extract", "a"), case("extract-signature"),
    case("extract-signature", "a"), case("replace-signature"), case("replace-signature", "a"),
    case("replace-signature", "a", "b"), case("encrypt"), case("encrypt", "a", "b"), case("encrypt", "--to", "x"),
    case("encrypt", "--to", "x", "a"), case("convert"), case("convert", "a"),
    case("-c", "{conf}", "mount"), case("-c", "{conf}", "write-slot"), case("-c", "{conf}", "write-slot", "a"),
    case("-c", "{conf}", "install"),
    case("info", "a", "b"), case("bundle", "a", "b", "c"), case("extract", "a", "b", "c"),
    case("extract-signature", "a", "b", "c"), case("resign", "a", "b", "c"),
    case("encrypt", "--to", "x", "a", "b", "c"), case("replace-signature", "a", "b", "c", "d"),
    case("-c", "{conf}", "mount", "a", "b"), case("-c", "{conf}", "write-slot", "a", "b", "c"),
    case("-c", "{conf}", "install", "a", "b"), case("mount", "-c", "/nonexistent.conf", "x"),
    case("resign", "a", "b", differs="rauc 1.8 also wants --keyring here; current RAUC only cert and key"),
    case("info", "--output-format=bad"), case("info", "--output-format=bad", "{bundle}", "--keyring={keyring}"),
    case("info", "/nonexistent"), case("info", "relative-missing"), case("info", "file://relative"),
    case("info", "file:/nonexistent"), case("info", "file:x"), case("info", "file://host/x"),
    case("info", "file:///a%2Fb"), case("info", "file:///a#b"), case("info", "--", "--x"),
    case("info", "--", "/nonexistent"), case("--", "info", "/nonexistent"),
    # no keyring anywhere (no system.conf on the host): refused before the bundle is read or fetched
    case("info", "{bundle}"), case("info", "http://127.0.0.1:9/x.raucb"), case("extract", "{bundle}", "out-x"),
    case("extract-signature", "{bundle}", "sig-x"),
]
# global and command options anywhere, "=" and space forms --------------------------------------
PLACEMENT = [
    case(*argv, stdout_lines=1, line=_collapse) for argv in (
        ("--keyring={keyring}", "info", "{bundle}"), ("--keyring", "{keyring}", "info", "{bundle}"),
        ("info", "{bundle}", "--keyring", "{keyring}"), ("info", "--keyring={keyring}", "{bundle}"),
        ("info", "{bundle}", "--keyring={keyring}", "--no-verify"), ("--no-verify", "info", "{bundle}"),
        ("-c", "{conf}", "info", "{bundle}"), ("info", "-c", "{conf}", "{bundle}"), ("info", "{bundle}", "-c{conf}"),
        ("--conf={conf}", "info", "{bundle}"), ("info", "--", "{bundle}", "--keyring={keyring}"),
        ("info", "--output-format=shell", "--keyring", "{keyring}", "{bundle}"),
    )
] + [case("info", "--output-format", "json", "{bundle}", "--keyring", "{keyring}",
          differs="json gained format, hash, type and artifact after 1.8 (1.12/1.13/1.15)"),
     case("info", "--", "-x"), case("info", "--", "/a", "/b"), case("info", "/a", "--", "/b")]


# bad input: the error line ---------------------------------------------------------------------
ERRORS = [
    case("-c", "{conf_key}", "info", "{bundle}"), case("-c", "{conf_nocompat}", "info", "{bundle}"),
    case("-c", "{conf_syntax}", "info", "{bundle}"), case("-c", "{conf_bootloader}", "info", "{bundle}"),
    case("-c", "{conf_nodevice}", "info", "{bundle}"),
    case("-c", "{ring_conf}", "info", "{bundle}"),             # only <hash>.<n> files are looked up
    case("info", "--keyring={ring_dir}", "{bundle}"),         # --keyring takes a file
    case("info", "--keyring={key}", "{bundle}"),              # a file without certificates
    case("info", "--keyring={keyring}", "{tiny}"),
    case("encrypt", "--to={cert}", "--keyring={other_keyring}", "{bundle}", "{dir}/e.raucb"),
    case("encrypt", "--to={cert}", "{bundle}", "{dir}/e.raucb"),
    case("extract-signature", "--keyring={keyring}", "{bundle}", "{exists}"),
    case("replace-signature", "--keyring={keyring}", "{bundle}", "{dir}/none.der", "{dir}/r.raucb",
         differs="stdout: 1.8 says 'Reading bundle in ...', current RAUC 'Replacing signature for ...'"),
]


@pytest.mark.parametrize("c", HELP + USAGE + ARGUMENTS + PLACEMENT + ERRORS,
                         ids=lambda c: " ".join(c.argv) or "(none)")
def test_same_as_rauc_1_8(c: Case, tools: Tools) -> None:
    want = tools.run("rauc", c.argv)
    got = tools.run("pyrauc", c.argv)
    report = f"rauc 1.8: {want}\npyrauc:   {got}"
    assert got.rc == want.rc, report
    assert bool(got.stdout) == bool(want.stdout), report
    assert bool(got.stderr) == bool(want.stderr), report
    if c.differs:
        return
    assert [c.line(x) for x in got.stdout[:c.stdout_lines]] == [c.line(x) for x in want.stdout[:c.stdout_lines]], \
        report
    assert got.stderr[:c.stderr_lines] == want.stderr[:c.stderr_lines], report


def test_never_exit_2(tools: Tools) -> None:
    """argparse exits 2 on usage errors; RAUC never does."""
    for argv in (("info", "--output-format"), ("--conf",), ("bundle", "--mksquashfs-args"), ("status", "--x")):
        assert tools.run("pyrauc", argv).rc == 1, argv


def test_version(tools: Tools) -> None:
    """``rauc --version`` starts with "rauc X.Y" for tools that parse it; pyrauc names itself after it."""
    want = tools.run("rauc", ("--version",))
    got = tools.run("pyrauc", ("--version",))
    assert want.stdout == ["rauc 1.8"]
    assert got.rc == 0 and got.stderr == []
    assert got.stdout[0].startswith("rauc 1.") and "(pyrauc " in got.stdout[0]
    as_pyrauc = subprocess.run([sys.executable, "-m", "pyrauc", "--version"], capture_output=True, text=True)
    assert as_pyrauc.stdout.startswith("pyrauc ") and "rauc 1." in as_pyrauc.stdout


def test_program_name_in_texts(tools: Tools) -> None:
    """Invoked as rauc the help says rauc, as pyrauc it says pyrauc."""
    assert tools.run("pyrauc", ("--help",)).stdout[1] == "  rauc [OPTION…] <COMMAND>"
    proc = subprocess.run([sys.executable, "-m", "pyrauc", "info", "--help"], capture_output=True, text=True)
    assert proc.stdout.splitlines()[1] == "  pyrauc [OPTION…] info <FILE>"


def test_main_help_lists_every_command(tools: Tools) -> None:
    want = tools.run("rauc", ("--help",)).stdout
    got = tools.run("pyrauc", ("--help",)).stdout
    start = want.index("List of rauc commands:")
    assert got[got.index("List of rauc commands:"):][:len(COMMANDS) + 1] == want[start:start + len(COMMANDS) + 1]


def test_help_option_columns(tools: Tools) -> None:
    """GLib aligns every description of a help text at one column."""
    lines = tools.run("pyrauc", ("install", "--help")).stdout
    options = [x for x in lines if x.startswith("  -")]
    columns = {len(x) - len(x[2:].split("  ", 1)[1].lstrip()) for x in options if x.rstrip() != x.split("  ", 2)[1]}
    assert len(columns) == 1, options
