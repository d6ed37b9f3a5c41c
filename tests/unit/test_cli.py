"""The CLI front: global options anywhere, help and errors, exit codes."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.bundles import pyrauc, pyrauc_bundle, write_content
from tests.helpers.pki import Pki


def signed_bundle(tmp_path: Path, pki: Pki, fmt: str = "verity") -> Path:
    """tmp_path/b.raucb: a ``fmt`` bundle of write_content() signed by pki.signer_direct."""
    return pyrauc_bundle(write_content(tmp_path / "c", fmt), tmp_path / "b.raucb", pki.signer_direct)


def system_conf(tmp_path: Path, pki: Pki, keyring_extra: str = "") -> Path:
    """tmp_path/system.conf for 'Test Config' with the noop bootloader and pki's keyring (+ ``keyring_extra``)."""
    conf = tmp_path / "system.conf"
    conf.write_text(f"[system]\ncompatible=Test Config\nbootloader=noop\n\n[keyring]\npath={pki.keyring}\n"
                    + keyring_extra)
    return conf


def test_no_command_prints_help_and_fails() -> None:
    proc = pyrauc()
    assert proc.returncode == 1
    assert proc.stdout.startswith("Usage:\n")
    assert proc.stderr == ""


def test_unknown_command() -> None:
    proc = pyrauc("frobnicate")
    assert proc.returncode == 1
    assert proc.stdout.startswith("Invalid command 'frobnicate' given\nUsage:\n")


def test_version() -> None:
    proc = pyrauc("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("pyrauc ")


def test_global_options_after_the_command(tmp_path: Path, pki: Pki) -> None:
    b = signed_bundle(tmp_path, pki)
    conf = system_conf(tmp_path, pki)
    before = pyrauc("-c", conf, "info", b)
    after = pyrauc("info", "-c", conf, b)
    assert before.returncode == after.returncode == 0
    assert before.stdout == after.stdout


def test_confopt_overrides_keyring_policy(tmp_path: Path, pki: Pki) -> None:
    b = signed_bundle(tmp_path, pki)
    conf = system_conf(tmp_path, pki, "check-purpose=codesign\n")
    refused = pyrauc("-c", conf, "info", b)
    assert refused.returncode == 1
    assert "unsuitable certificate purpose" in refused.stderr
    assert pyrauc("-c", conf, "-C", "keyring:check-purpose=any", "info", b).returncode == 0


def test_broken_system_conf_is_one_line(tmp_path: Path) -> None:
    conf = tmp_path / "system.conf"
    conf.write_text("[system]\ncompatible=x\nbootloader=noop\nbogus=1\n")
    some = tmp_path / "some.raucb"
    some.write_bytes(b"x" * 100)
    proc = pyrauc("-c", conf, "info", some)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("Reading")]
    assert lines == [f"Failed to initialize context: Failed to load system config ({conf}): "
                     "Invalid key 'bogus' in group '[system]'"]


def test_info_unknown_output_format(tmp_path: Path) -> None:
    proc = pyrauc("info", "--output-format=yaml", tmp_path / "x.raucb")
    assert proc.returncode == 1
    assert "Unknown output format: 'yaml'" in proc.stderr


def test_crypt_key_never_printed(tmp_path: Path, pki: Pki) -> None:
    from pyrauc import bundle
    from pyrauc.signature import Keyring

    b = signed_bundle(tmp_path, pki, "crypt")
    opened = bundle.open_bundle(b, keyring=Keyring(path=pki.keyring))
    assert opened.manifest.crypt_key is not None
    key_hex = opened.manifest.crypt_key.hex()
    for fmt in ("readable", "shell", "json", "json-pretty"):
        proc = pyrauc("info", "--keyring", pki.keyring, f"--output-format={fmt}", b, check=True)
        assert key_hex not in proc.stdout + proc.stderr
    assert "Crypt Key:    '<hidden>'" in pyrauc("info", "--keyring", pki.keyring, b).stdout
    assert key_hex not in repr(opened) + repr(opened.manifest)
