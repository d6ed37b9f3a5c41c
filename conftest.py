"""Top-level pytest configuration: shared fixtures for every suite.

Host suites (tests/unit, tests/interop) need nothing but this machine; the lab suite
(tests/lab) needs ``--lg-env`` and skips without it while the host suites still run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers.pki import Pki, make_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The standard test PKI (root, intermediate, signers, expired, codesign, unrelated CA)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def rauc_bin() -> str:
    """Debian's rauc 1.8, the oracle of the interop tests."""
    path = shutil.which("rauc")
    if path is None:
        pytest.fail("Debian's rauc is not installed (apt-get install rauc); interop tests need it")
    return path


@pytest.fixture
def content_dir(tmp_path: Path) -> Path:
    """A bundle input directory with two small images and no manifest yet."""
    d = tmp_path / "content"
    d.mkdir()
    (d / "rootfs.img").write_bytes(bytes(range(256)) * 256 * 3)   # 196608 bytes
    (d / "appfs.img").write_bytes(b"appfs\n" * 5000)
    return d
