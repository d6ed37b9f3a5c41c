"""Top-level pytest configuration: shared fixtures for every suite.

Host suites (tests/unit, tests/interop) need nothing but this machine; the lab suite
(tests/lab) needs ``--lg-env`` and skips without it while the host suites still run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers.pki import Pki, make_pki

# the lab plugin must set its LG_* variables before labgrid loads the env file
pytest_plugins = ["labs.pytest_lab", "labs.pytest_farm"]


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The standard test PKI (root, intermediate, signers, expired, codesign, unrelated CA)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


def require_tool(name: str, package: str, why: str) -> str:
    """The path of NAME, or a test failure (never a silent skip) saying what to install."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (apt-get install {package}); {why}")
    return path


@pytest.fixture(scope="session")
def rauc_bin() -> str:
    """Debian's rauc 1.8, the oracle of the interop tests."""
    return require_tool("rauc", "rauc", "interop tests need Debian's rauc as the oracle")


@pytest.fixture(scope="session")
def openssl_bin() -> str:
    """The openssl CLI, a second oracle for CMS structures."""
    return require_tool("openssl", "openssl", "CMS interop tests need it")


@pytest.fixture
def content_dir(tmp_path: Path) -> Path:
    """A bundle input directory with two small images and no manifest yet."""
    d = tmp_path / "content"
    d.mkdir()
    (d / "rootfs.img").write_bytes(bytes(range(256)) * 256 * 3)   # 196608 bytes
    (d / "appfs.img").write_bytes(b"appfs\n" * 5000)
    return d
