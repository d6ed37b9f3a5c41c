"""A throw-away SoftHSM2 token for PKCS#11 tests.

:func:`make_token` writes a softhsm2.conf whose ``directories.tokendir`` is a temporary
directory, initialises a token there with ``softhsm2-util`` and imports key pairs and
certificates with OpenSC's ``pkcs11-tool`` (so the token content does not depend on pyrauc).
Keys are generated in software by the caller (tests/helpers/pki.py) so tests can compare the
token's results with the software key; :meth:`SoftHsmToken.keygen` makes keys on the token.

Needs the Debian packages ``softhsm2`` (softhsm2-util, libsofthsm2.so) and ``opensc``
(pkcs11-tool).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

SOFTHSM_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


def find_module() -> str | None:
    """Path of libsofthsm2.so, or None when SoftHSM2 is not installed."""
    for path in SOFTHSM_MODULE_CANDIDATES:
        if os.path.exists(path):
            return path
    return None


def tools_missing() -> str | None:
    """Why SoftHSM tests cannot run (missing package), or None."""
    if find_module() is None or shutil.which("softhsm2-util") is None:
        return "SoftHSM2 is not installed (apt-get install softhsm2)"
    if shutil.which("pkcs11-tool") is None:
        return "pkcs11-tool is not installed (apt-get install opensc)"
    return None


@dataclass
class SoftHsmToken:
    """An initialised token in its own token directory."""

    directory: Path
    conf: Path
    module: str
    label: str
    pin: str
    so_pin: str
    objects: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        """Environment for tools and pyrauc: SOFTHSM2_CONF, RAUC_PKCS11_MODULE, RAUC_PKCS11_PIN."""
        return {"SOFTHSM2_CONF": str(self.conf), "RAUC_PKCS11_MODULE": self.module,
                "RAUC_PKCS11_PIN": self.pin}

    def uri(self, label: str, *, type_: str | None = None, key_id: bytes | None = None) -> str:
        """RFC 7512 URI of an object on this token."""
        parts = [f"token={quote(self.label, safe='')}", f"object={quote(label, safe='')}"]
        if key_id is not None:
            parts.append("id=" + "".join(f"%{b:02x}" for b in key_id))
        if type_:
            parts.append(f"type={type_}")
        return "pkcs11:" + ";".join(parts)

    def _tool(self, *args: str) -> None:
        module = self.module
        env = {**os.environ, "SOFTHSM2_CONF": str(self.conf)}
        cmd = ["pkcs11-tool", "--module", module, "--token-label", self.label,
               "--login", "--pin", self.pin, *args]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout}{result.stderr}")

    def import_key(self, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, label: str, key_id: bytes,
                   cert: x509.Certificate | None = None, *, with_public: bool = True,
                   derive: bool = True) -> None:
        """Write a private key (and optionally its public key and certificate) to the token.

        EC keys get CKA_DERIVE (needed for ECDH) unless ``derive`` is False.
        """
        tmp = self.directory / f"import-{label}"
        tmp.mkdir(exist_ok=True)
        priv = tmp / "key.der"
        priv.write_bytes(key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        try:
            hex_id = key_id.hex()
            usage = ["--usage-derive"] if derive and isinstance(key, ec.EllipticCurvePrivateKey) else []
            self._tool("--write-object", str(priv), "--type", "privkey", "--id", hex_id, "--label", label,
                       *usage)
            if with_public:
                pub = tmp / "pub.der"
                pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.DER,
                                                              serialization.PublicFormat.SubjectPublicKeyInfo))
                self._tool("--write-object", str(pub), "--type", "pubkey", "--id", hex_id, "--label", label)
            if cert is not None:
                crt = tmp / "cert.der"
                crt.write_bytes(cert.public_bytes(serialization.Encoding.DER))
                self._tool("--write-object", str(crt), "--type", "cert", "--id", hex_id, "--label", label)
        finally:
            shutil.rmtree(tmp)
        self.objects.append(label)

    def keygen(self, key_type: str, label: str, key_id: bytes) -> None:
        """Generate a key pair on the token, e.g. ``rsa:2048`` or ``EC:prime256v1``."""
        self._tool("--keypairgen", "--key-type", key_type, "--id", key_id.hex(), "--label", label)
        self.objects.append(label)


def make_token(directory: Path, *, label: str = "pyrauc-test", pin: str = "1234",
               so_pin: str = "123456") -> SoftHsmToken:
    """Create a token directory + config and initialise one token in it."""
    module = find_module()
    if module is None:
        raise RuntimeError("SoftHSM2 is not installed (apt-get install softhsm2)")
    tokendir = directory / "tokens"
    tokendir.mkdir(parents=True, exist_ok=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokendir}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin,
                    "--so-pin", so_pin], env=env, check=True, capture_output=True)
    return SoftHsmToken(directory, conf, module, label, pin, so_pin)


def make_token_or_skip(directory: Path) -> SoftHsmToken:
    """:func:`make_token` with the defaults, or skip the calling test when SoftHSM2 or pkcs11-tool is missing."""
    import pytest

    missing = tools_missing()
    if missing:
        pytest.skip(missing)
    return make_token(directory)
