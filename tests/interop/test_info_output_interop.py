"""``rauc info`` output byte for byte against Debian's rauc 1.8, for scripts that parse it.

The machine formats (shell, json, json-pretty) must be rauc 1.8's bytes once the fields current
RAUC added are taken out of pyrauc's output (``RAUC_MF_HASH``, ``RAUC_MF_FORMAT``,
``RAUC_IMAGE_ARTIFACT_n``; ``format``, ``hash``, ``artifact``, ``type``): image numbers from 0,
json-glib's spacing and raw UTF-8, the blank line after shell output. ``--dump-cert`` and
``--dump-recipients`` follow the text in every format. The readable format follows current RAUC
(spaces, more lines): only what follows the images, and the ANSI codes, are compared.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.bundles import write_content
from tests.helpers.pki import Pki

pytestmark = pytest.mark.interop

MASTER_SHELL = re.compile(r"^RAUC_(MF_HASH|MF_FORMAT|IMAGE_ARTIFACT_\d+)=.*\n", re.M)
MASTER_JSON = re.compile(r'"(format|hash|type)":"[^"]*",|"artifact":null,')
MASTER_JSON_PRETTY = re.compile(r'^ *"(format|hash|type|artifact)" : .*,\n', re.M)
RICH = """
[hooks]
filename=hook.sh
hooks=install-check

[meta.extra]
note=x
"""


@dataclass
class Setup:
    rauc: str
    pyrauc: list[str]
    keyring: Path
    bundle: Path
    encrypted: Path
    key: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, rauc_bin: str, pki: Pki) -> Setup:
    d = tmp_path_factory.mktemp("info-out")
    content = write_content(d / "content", "crypt", rootfs_size=8192, extra_manifest=RICH)
    mf = content / "manifest.raucm"
    mf.write_text(mf.read_text().replace("[update]\n", "[update]\ndescription=Grüße \"x\" 'y' $HOME\tz\n", 1)
                  .replace("[image.rootfs]\n", "[image.rootfs.var-a]\nhooks=pre-install\n", 1))
    (content / "hook.sh").write_text("#!/bin/sh\n")
    bundle = d / "b.raucb"
    sign = ["--cert", str(pki.signer_direct.cert_path), "--key", str(pki.signer_direct.key_path)]
    subprocess.run([rauc_bin, "bundle", *sign, str(content), str(bundle)], check=True, capture_output=True)
    encrypted = d / "e.raucb"
    recipient = pki.signer                   # any RSA certificate can be a recipient
    subprocess.run([rauc_bin, "encrypt", "--keyring", str(pki.keyring), "--to", str(recipient.cert_path),
                    str(bundle), str(encrypted)], check=True, capture_output=True)
    return Setup(rauc_bin, [sys.executable, "-m", "pyrauc"], pki.keyring, bundle, encrypted, recipient.key_path)


def _out(argv: list[str]) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAUC_", "G_MESSAGES"))}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _both(s: Setup, *args: str) -> tuple[str, str]:
    argv = ["info", "--keyring", str(s.keyring), *args]
    return _out([s.rauc, *argv]), _out([*s.pyrauc, *argv])


@pytest.mark.parametrize("extra", [[], ["--no-verify"], ["--dump-cert"]], ids=["verified", "no-verify", "dump-cert"])
@pytest.mark.parametrize(("fmt", "master"), [("shell", MASTER_SHELL), ("json", MASTER_JSON),
                                             ("json-pretty", MASTER_JSON_PRETTY)])
def test_machine_formats_are_rauc_1_8_bytes(setup: Setup, fmt: str, master: re.Pattern[str], extra: list[str]) -> None:
    theirs, ours = _both(setup, f"--output-format={fmt}", *extra, str(setup.bundle))
    assert master.sub("", ours) == theirs
    if fmt == "shell":
        assert "RAUC_IMAGE_NAME_0='rootfs.img'\n" in ours and "RAUC_IMAGE_NAME_1='appfs.img'\n" in ours
        assert "RAUC_IMAGE_NAME_2" not in ours


def test_dump_recipients_follow_json(setup: Setup) -> None:
    theirs, ours = _both(setup, "--output-format=json", "--dump-recipients", "--key", str(setup.key),
                         str(setup.encrypted))
    assert "Recipients:" in theirs
    assert MASTER_JSON.sub("", ours) == theirs


@pytest.mark.parametrize("extra", [[], ["--no-verify"], ["--dump-cert"]], ids=["verified", "no-verify", "dump-cert"])
def test_readable_tail_and_colors(setup: Setup, extra: list[str]) -> None:
    """After the images: the dumps, the chain and a blank line (or "Signature unverified"), as
    1.8 prints them; slot classes and the CMS note in bold also into a pipe, as RAUC does."""
    theirs, ours = _both(setup, *extra, str(setup.bundle))
    assert _tail(ours) == _tail(theirs)
    assert "\033[1m[rootfs]\033[0m" in ours and "\033[1m[rootfs]\033[0m" in theirs
    assert "\033[1m\033[33m [unencrypted CMS]\033[0m" in ours


def _tail(text: str) -> str:
    """What follows the last image's Hooks line (1.8's tabs and current RAUC's spaces alike)."""
    return re.split(r"\n\s*Hooks: [^\n]*\n", text)[-1]
