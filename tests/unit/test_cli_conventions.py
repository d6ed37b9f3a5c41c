"""RAUC's command-line conventions beyond parsing: what a script relying on them gets from pyrauc.

Bundling against a keyring, -C on every command, bundle-formats for info, json-2, SemVer versions,
content checks, block hash indexes, resign/replace-signature of crypt bundles, the progress bar.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import subprocess
from pathlib import Path

import pytest

from pyrauc import semver
from pyrauc.cli_install import progress_bar, progress_printer
from tests.helpers.bundles import error_lines, pyrauc, pyrauc_bundle, write_content
from tests.helpers.pki import Pki


def one_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The single error line of a failed run (exit 1, no traceback)."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = error_lines(proc)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def bundle_cmd(content: Path, out: Path, signer: object, *extra: str | os.PathLike[str]) -> list[str | Path]:
    return ["bundle", "--cert", signer.cert_path, "--key", signer.key_path, *extra, content, out]  # type: ignore[attr-defined]


# --- bundle verifies what it made against --keyring --------------------------------------------

@pytest.mark.parametrize("placement", ["global", "command"])
def test_bundle_with_keyring_verifies(tmp_path: Path, pki: Pki, placement: str) -> None:
    content = write_content(tmp_path / "c")
    out = tmp_path / "ok.raucb"
    argv = bundle_cmd(content, out, pki.signer_direct)
    argv = ["--keyring", pki.keyring, *argv] if placement == "global" else [*argv, "--keyring", pki.keyring]
    ok = pyrauc(*argv)
    assert ok.returncode == 0, ok.stderr
    assert "Keyring given, doing signature verification" in ok.stderr
    assert "Verified inline signature by 'O = Test Org, CN = signer-direct'" in ok.stderr


@pytest.mark.parametrize(("signer", "reason"), [("expired", "certificate has expired"),
                                                 ("other_signer", "unable to get local issuer certificate")])
def test_bundle_refused_by_keyring_leaves_nothing(tmp_path: Path, pki: Pki, signer: str, reason: str) -> None:
    content = write_content(tmp_path / "c")
    out = tmp_path / "bad.raucb"
    err = one_error(pyrauc(*bundle_cmd(content, out, getattr(pki, signer), "--keyring", pki.keyring)))
    assert err == ("Failed to create bundle: failed to sign manifest: signature verification failed: "
                   f"Verify error: {reason}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
    assert sorted(p.name for p in content.iterdir()) == ["appfs.img", "manifest.raucm", "rootfs.img"]


def test_bundle_without_keyring_says_so(tmp_path: Path, pki: Pki) -> None:
    proc = pyrauc(*bundle_cmd(write_content(tmp_path / "c"), tmp_path / "b.raucb", pki.expired))
    assert proc.returncode == 0
    assert proc.stdout == "Creating 'verity' format bundle\n"
    assert "No keyring given, skipping signature verification" in proc.stderr


# --- -C/--confopt on every command, bundle-formats --------------------------------------------

@pytest.mark.parametrize("command", ["bundle", "info", "extract", "encrypt", "resign", "replace-signature",
                                     "extract-signature", "status", "install", "mount", "write-slot"])
@pytest.mark.parametrize(("spec", "message"), [("nonsense", "Missing '='"), ("system=x", "Missing ':'"),
                                               (":x=1", "you must specify it in format SECTION:KEY=VALUE")])
def test_confopt_errors_on_every_command(tmp_path: Path, command: str, spec: str, message: str) -> None:
    args = {"bundle": ["--cert", "c", "--key", "k", str(tmp_path), "/tmp/never.raucb"],
            "encrypt": ["--to", "x", "a", "b"], "replace-signature": ["a", "b", "c"], "status": [],
            "write-slot": ["a", "b"]}.get(command, ["a", "b"][:1 if command in ("info", "install", "mount") else 2])
    err = one_error(pyrauc("-C", spec, command, *args))
    assert err == f"Failed to initialize context: Error in parsing override: {message}"


def test_info_applies_bundle_formats(tmp_path: Path, pki: Pki) -> None:
    plain = pyrauc_bundle(write_content(tmp_path / "p", "plain"), tmp_path / "p.raucb", pki.signer_direct)
    verity = pyrauc_bundle(write_content(tmp_path / "v", "verity"), tmp_path / "v.raucb", pki.signer_direct)
    only_verity = ("-C", "system:bundle-formats=verity", "info", "--keyring", pki.keyring)
    assert one_error(pyrauc(*only_verity, plain)) == "Bundle format 'plain' not allowed"
    assert pyrauc(*only_verity, verity).returncode == 0
    conf = tmp_path / "system.conf"
    conf.write_text(f"[system]\ncompatible=x\nbootloader=noop\nbundle-formats=-plain\n[keyring]\npath={pki.keyring}\n")
    assert one_error(pyrauc("-c", conf, "info", plain)) == "Bundle format 'plain' not allowed"
    assert pyrauc("-c", conf, "info", verity).returncode == 0
    assert pyrauc("-c", conf, "-C", "system:bundle-formats=plain verity", "info", plain).returncode == 0


# --- info --output-format=json-2 ----------------------------------------------------------------

def test_info_json_2(tmp_path: Path, pki: Pki) -> None:
    extra = "\n[meta.release]\nchannel=beta\n"
    content = write_content(tmp_path / "c", "crypt", extra_manifest=extra)
    with open(content / "manifest.raucm", "a") as f:
        f.write("\n[hooks]\nfilename=hook.sh\nhooks=install-check\n")
    (content / "hook.sh").write_text("#!/bin/sh\n")
    b = pyrauc_bundle(content, tmp_path / "b.raucb", pki.signer_direct)
    proc = pyrauc("info", "--output-format=json-2", "--keyring", pki.keyring, b)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert set(info) == {"manifest-hash", "update", "bundle", "hooks", "images", "meta"}
    assert info["update"] == {"compatible": "Test Config", "version": "2024.01-1"}
    assert info["bundle"]["format"] == "crypt" and info["bundle"]["verity-size"] > 0
    assert "crypt-key" not in proc.stdout
    assert info["hooks"] == {"filename": "hook.sh", "hooks": ["install-check"]}
    rootfs = info["images"][0]
    assert rootfs["slot-class"] == "rootfs" and rootfs["filename"] == "rootfs.img" and rootfs["hooks"] == []
    assert rootfs["size"] == 196608 and rootfs["type"] == "raw"
    assert rootfs["checksum"] == hashlib.sha256((content / "rootfs.img").read_bytes()).hexdigest()
    assert info["meta"] == {"release": {"channel": "beta"}}
    shell = pyrauc("info", "--output-format=shell", "--keyring", pki.keyring, b).stdout
    assert f"RAUC_MF_HASH='{info['manifest-hash']}'" in shell


def test_info_unknown_format_is_one_line(tmp_path: Path, pki: Pki) -> None:
    b = pyrauc_bundle(write_content(tmp_path / "c"), tmp_path / "b.raucb", pki.signer_direct)
    assert one_error(pyrauc("info", "--output-format=yaml", b)) == "Unknown output format: 'yaml'"


# --- versions -----------------------------------------------------------------------------------

def test_semver_precedence() -> None:
    order = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11",
             "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1", "2", "1000-rc.1+21000101", "1000"]
    parsed = [semver.parse(v) for v in order]
    assert all(p is not None for p in parsed)
    for a, b in itertools.pairwise(parsed):
        assert a is not None and b is not None and a < b
    assert semver.at_least("1.2.3+build.7", "1.2.3+other")
    assert semver.at_least("2024.1", "2024.1.0")
    for bad in ("1.x", "01.2", "1.2.3.4", "", "1.2-", "1.2+", "v1.2", "1..2", "1.2-rc..1"):
        assert semver.parse(bad) is None, bad


def _manifest_error(tmp_path: Path, pki: Pki, line: str) -> str:
    content = write_content(tmp_path / "c", extra_manifest="")
    text = (content / "manifest.raucm").read_text().replace("version=2024.01-1\n", f"version=2024.01-1\n{line}\n")
    (content / "manifest.raucm").write_text(text)
    proc = pyrauc(*bundle_cmd(content, tmp_path / "b.raucb", pki.signer_direct))
    return one_error(proc) if proc.returncode else ""


@pytest.mark.parametrize(("value", "message"), [
    ("1.14", ""), ("1.15.2-rc.1+build.5", ""), ("1.14.0+20240101", ""),
    ("1000-rc.1+21000101", "Failed to create bundle: Minimum RAUC version in manifest (1000-rc.1+21000101) is "
                           "newer than current version (1.15.2)"),
    ("1.x", "Failed to create bundle: Failed to parse 'min-rauc-version'. Expected "
            "'Major[.Minor[.Patch]][-pre_release]]', got '1.x'"),
    ("1.13.9", "Failed to create bundle: Minimum RAUC version field in manifest is only supported since 1.14 "
               "(not '1.13.9')"),
])
def test_min_rauc_version(tmp_path: Path, pki: Pki, value: str, message: str) -> None:
    assert _manifest_error(tmp_path, pki, f"min-rauc-version={value}") == message


@pytest.mark.parametrize(("value", "ok"), [("2024.1.0-rc.1+21000101", True), ("1000-rc.1+21000101", True),
                                           ("1.2.3.4", False), ("1.0-", False)])
def test_min_bundle_version_config(tmp_path: Path, value: str, ok: bool) -> None:
    conf = tmp_path / "system.conf"
    conf.write_text(f"[system]\ncompatible=x\nbootloader=noop\nmin-bundle-version={value}\n"
                    "[slot.rootfs.0]\ndevice=/dev/null\n")
    proc = pyrauc("-c", conf, "status", "--override-boot-slot", "x")
    if ok:
        assert "Min version format invalid" not in proc.stderr
    else:
        assert one_error(proc) == (f"Failed to initialize context: Failed to load system config ({conf}): "
                                   "Min version format invalid, expected: "
                                   f"Major[.Minor[.Patch]][-pre_release], got: {value}")


# --- bundle content -----------------------------------------------------------------------------

def test_content_symlinks_and_directories(tmp_path: Path, pki: Pki) -> None:
    content = write_content(tmp_path / "c")
    (content / "sub").mkdir()
    (content / "sub" / "notes.txt").write_text("hello\n")
    (content / "link.img").symlink_to("rootfs.img")
    out = tmp_path / "ok.raucb"
    assert pyrauc(*bundle_cmd(content, out, pki.signer_direct)).returncode == 0
    ext = tmp_path / "ext"
    assert pyrauc("extract", "--keyring", pki.keyring, out, ext).returncode == 0
    assert (ext / "sub" / "notes.txt").read_text() == "hello\n"
    assert os.readlink(ext / "link.img") == "rootfs.img"
    assert ext.stat().st_mode & 0o777 == 0o755 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize(("make", "message"), [
    (lambda c: (c / "abs.img").symlink_to("/etc/passwd"), "absolute symlinks are not supported as bundle contents"),
    (lambda c: (c / "sl.img").symlink_to("sub/x"), "symlinks containing slashes are not supported as bundle contents"),
    (lambda c: (c / ".hidden").mkdir(), "hidden directories are not supported as bundle contents (.hidden)"),
])
def test_content_refused(tmp_path: Path, pki: Pki, make: object, message: str) -> None:
    content = write_content(tmp_path / "c")
    make(content)  # type: ignore[operator]
    err = one_error(pyrauc(*bundle_cmd(content, tmp_path / "b.raucb", pki.signer_direct)))
    assert err.startswith(f"Failed to create bundle: {message}")
    assert not (tmp_path / "b.raucb").exists()
    assert not [p for p in content.iterdir() if p.name.startswith(".rauc-workdir")]


# --- adaptive=block-hash-index ------------------------------------------------------------------

def _adaptive_content(directory: Path, size: int) -> Path:
    directory.mkdir()
    (directory / "rootfs.img").write_bytes(os.urandom(size))
    (directory / "manifest.raucm").write_text("[update]\ncompatible=Test Config\nversion=1\n\n[bundle]\nformat=verity\n"
                                              "\n[image.rootfs]\nfilename=rootfs.img\nadaptive=block-hash-index\n")
    return directory


def test_block_hash_index_written(tmp_path: Path, pki: Pki) -> None:
    content = _adaptive_content(tmp_path / "c", 64 * 4096)
    out = pyrauc_bundle(content, tmp_path / "b.raucb", pki.signer_direct)
    ext = tmp_path / "ext"
    assert pyrauc("extract", "--keyring", pki.keyring, out, ext).returncode == 0
    image = (content / "rootfs.img").read_bytes()
    want = b"".join(hashlib.sha256(image[i:i + 4096]).digest() for i in range(0, len(image), 4096))
    assert (ext / "rootfs.img.block-hash-index").read_bytes() == want
    info = pyrauc("info", "--keyring", pki.keyring, out).stdout
    assert "    Adaptive:  block-hash-index" in info
    assert not (content / "rootfs.img.block-hash-index").exists()   # the content dir is not written to


@pytest.mark.parametrize(("size", "message"), [
    (4096 * 3 + 1, "image/partition size (12289) is not a multiple of 4096 bytes"),
    (0, "image/partition is empty")])
def test_block_hash_index_refused(tmp_path: Path, pki: Pki, size: int, message: str) -> None:
    content = _adaptive_content(tmp_path / "c", size)
    err = one_error(pyrauc(*bundle_cmd(content, tmp_path / "b.raucb", pki.signer_direct)))
    assert err == f"Failed to create bundle: Failed to generate hash index for rootfs.img: {message}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
    assert sorted(p.name for p in content.iterdir()) == ["manifest.raucm", "rootfs.img"]


def test_unknown_adaptive_method(tmp_path: Path, pki: Pki) -> None:
    content = _adaptive_content(tmp_path / "c", 4096 * 2)
    text = (content / "manifest.raucm").read_text().replace("block-hash-index", "magic")
    (content / "manifest.raucm").write_text(text)
    assert one_error(pyrauc(*bundle_cmd(content, tmp_path / "b.raucb", pki.signer_direct))) == (
        "Failed to create bundle: Unsupported adaptive method: magic")


# --- install --progress --------------------------------------------------------------------------

def test_progress_bar_cells() -> None:
    assert progress_bar(0, 20) == "[#            ]  0%"
    assert progress_bar(50, 20) == "[#######      ] 50%"
    assert progress_bar(100, 20) == "[#############]100%"
    assert len(progress_bar(37, 80)) == 79     # the last column stays free, so the bar never wraps
    assert progress_bar(40, 0) == "[] 40%"      # a serial console reports 0 columns: RAUC's empty bar


def test_progress_printer_keeps_the_bar_last() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

        def fileno(self) -> int:
            raise OSError("not a real terminal")

    stream = Tty()
    emit = progress_printer(stream, bar=True)
    emit("  0% Installing")
    emit(" 40% Checking bundle")
    emit("LastError: broken")
    text = stream.getvalue()
    assert text.startswith("\r\033[F\033[J  0% Installing\n[")   # erases the "installing" line, as RAUC
    assert "\r\033[F\033[J 40% Checking bundle\n[" in text
    assert text.endswith("\r\033[F\033[J\033[JLastError: broken\n")
    plain = io.StringIO()
    progress_printer(plain, bar=False)("  0% Installing")
    assert plain.getvalue() == "  0% Installing\n"
