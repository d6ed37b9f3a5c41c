"""Unit tests of pyrauc.keys: certificates and private keys from files (PKCS#11 via a stub)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pyrauc import keys
from pyrauc.errors import KeyLoadError
from tests.helpers.pki import Pki, issue, write_pem_bundle


def test_load_cert_first_of_file(pki: Pki, tmp_path: Path) -> None:
    both = write_pem_bundle(tmp_path / "both.pem", [pki.signer.cert, pki.intermediate.cert])
    assert keys.load_cert(str(both)) == pki.signer.cert


def test_load_cert_skips_leading_text_and_key(pki: Pki, tmp_path: Path) -> None:
    path = tmp_path / "mixed.pem"
    path.write_bytes(b"comment line\n" + pki.signer.key_path.read_bytes() + pki.signer.cert_path.read_bytes())
    assert keys.load_cert(str(path)) == pki.signer.cert


def test_load_cert_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyLoadError) as exc:
        keys.load_cert(str(tmp_path / "nope.pem"))
    assert str(exc.value) == f"failed to load cert file '{tmp_path / 'nope.pem'}'"


@pytest.mark.parametrize("which", ["key", "empty"])
def test_load_cert_not_a_cert(pki: Pki, tmp_path: Path, which: str) -> None:
    path = pki.signer.key_path if which == "key" else tmp_path / "empty.pem"
    if which == "empty":
        path.write_bytes(b"")
    with pytest.raises(KeyLoadError) as exc:
        keys.load_cert(str(path))
    assert str(exc.value) == f"failed to parse cert file '{path}': Expecting: CERTIFICATE"


def test_load_cert_garbage_in_pem(tmp_path: Path) -> None:
    path = tmp_path / "bad.pem"
    path.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(KeyLoadError, match=r"^failed to parse cert file '.*bad.pem': "):
        keys.load_cert(str(path))


def test_load_certs_all(pki: Pki, tmp_path: Path) -> None:
    certs = [pki.signer.cert, pki.intermediate.cert, pki.root.cert]
    path = write_pem_bundle(tmp_path / "three.pem", certs)
    assert keys.load_certs(str(path)) == certs


def test_load_certs_thousands(pki: Pki, tmp_path: Path) -> None:
    pem = pki.signer.cert_path.read_bytes()
    path = tmp_path / "many.pem"
    path.write_bytes(pem * 3000)
    certs = keys.load_certs(str(path))
    assert len(certs) == 3000
    assert all(c == pki.signer.cert for c in certs[:3])


def test_load_certs_key_file_and_empty(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(KeyLoadError) as exc:
        keys.load_certs(str(pki.signer.key_path))
    assert str(exc.value) == f"failed to parse cert file '{pki.signer.key_path}': Expecting: CERTIFICATE"
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"")
    with pytest.raises(KeyLoadError, match="Expecting: CERTIFICATE"):
        keys.load_certs(str(empty))
    with pytest.raises(KeyLoadError, match=r"^failed to load cert file"):
        keys.load_certs(str(tmp_path / "missing.pem"))


@pytest.mark.parametrize("attr", ["signer", "signer_ec"])
def test_load_private_key_pem_and_der(pki: Pki, tmp_path: Path, attr: str) -> None:
    issued = getattr(pki, attr)
    key = keys.load_private_key(str(issued.key_path))
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    assert key.private_numbers() == issued.key.private_numbers()
    der = tmp_path / "key.der"
    der.write_bytes(issued.key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    assert keys.load_private_key(str(der)).private_numbers() == issued.key.private_numbers()
    trad = tmp_path / "trad.pem"
    trad.write_bytes(issued.key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.TraditionalOpenSSL,
                                              serialization.NoEncryption()))
    assert keys.load_private_key(str(trad)).private_numbers() == issued.key.private_numbers()


def test_load_private_key_passphrase(pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    enc = tmp_path / "enc.pem"
    enc.write_bytes(pki.signer.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret")))
    monkeypatch.delenv("RAUC_KEY_PASSPHRASE", raising=False)
    with pytest.raises(KeyLoadError) as exc:
        keys.load_private_key(str(enc))
    assert str(exc.value).startswith(f"failed to parse key file '{enc}': ")
    assert "RAUC_KEY_PASSPHRASE" in str(exc.value)
    monkeypatch.setenv("RAUC_KEY_PASSPHRASE", "wrong")
    with pytest.raises(KeyLoadError, match=r"^failed to parse key file '.*enc.pem': bad decrypt"):
        keys.load_private_key(str(enc))
    monkeypatch.setenv("RAUC_KEY_PASSPHRASE", "s3cret")
    assert keys.load_private_key(str(enc)).private_numbers() == pki.signer.key.private_numbers()


def test_load_private_key_errors(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(KeyLoadError) as exc:
        keys.load_private_key(str(tmp_path / "missing.key"))
    assert str(exc.value) == f"failed to load key file '{tmp_path / 'missing.key'}'"
    with pytest.raises(KeyLoadError) as exc:
        keys.load_private_key(str(pki.signer.cert_path))
    assert str(exc.value) == (f"failed to parse key file '{pki.signer.cert_path}': "
                              "No supported data to decode. Input type: PEM")
    empty = tmp_path / "empty.key"
    empty.write_bytes(b"")
    with pytest.raises(KeyLoadError, match=r"^failed to parse key file '.*empty.key': "):
        keys.load_private_key(str(empty))


def test_errors_never_contain_key_material(pki: Pki, tmp_path: Path) -> None:
    broken = tmp_path / "broken.pem"
    data = pki.signer.key_path.read_bytes()
    broken.write_bytes(data[:200] + b"!!" + data[200:])
    with pytest.raises(KeyLoadError) as exc:
        keys.load_private_key(str(broken))
    body = b"".join(data.splitlines()[1:3]).decode()
    assert body[:20] not in str(exc.value)


def test_pkcs11_uris_go_to_pkcs11_module(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    stub = types.ModuleType("pyrauc.pkcs11")

    def load_private_key(uri: str) -> object:
        calls.append(("key", uri))
        return pki.signer.key

    def load_certificate(uri: str) -> object:
        calls.append(("cert", uri))
        return pki.signer.cert

    stub.load_private_key = load_private_key  # type: ignore[attr-defined]
    stub.load_certificate = load_certificate  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pyrauc.pkcs11", stub)
    import pyrauc
    monkeypatch.setattr(pyrauc, "pkcs11", stub, raising=False)
    assert keys.load_private_key("pkcs11:token=t;object=k") is pki.signer.key
    assert keys.load_cert("pkcs11:token=t;object=c") is pki.signer.cert
    assert calls == [("key", "pkcs11:token=t;object=k"), ("cert", "pkcs11:token=t;object=c")]


def test_ec_p384_key(tmp_path: Path) -> None:
    issued = issue(tmp_path, "p384", key_kind="p384")
    key = keys.load_private_key(str(issued.key_path))
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp384r1"
