"""pyrauc.pkcs11 against a real SoftHSM2 token (needs the softhsm2 and opensc packages)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from pyrauc import envelope
from pyrauc import pkcs11 as p11
from pyrauc.errors import EnvelopeError, KeyLoadError
from tests.helpers.pki import Issued, issue
from tests.helpers.softhsm import SoftHsmToken, make_token, tools_missing

pytestmark = pytest.mark.pkcs11


@dataclass
class Setup:
    token: SoftHsmToken
    rsa: Issued          # id 01, with public key object and certificate
    ec256: Issued        # id 02, with public key object and certificate
    ec384: Issued        # id 03, certificate only (public key comes from the certificate)
    rsa_nopub: Issued    # id 05, certificate only
    ec_noderive: Issued  # id 06, EC key without CKA_DERIVE


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    missing = tools_missing()
    if missing:
        pytest.fail(missing)
    d = tmp_path_factory.mktemp("softhsm")
    token = make_token(d)
    keys = d / "keys"
    setup = Setup(token, issue(keys, "tok-rsa"), issue(keys, "tok-ec256", key_kind="p256"),
                  issue(keys, "tok-ec384", key_kind="p384"), issue(keys, "tok-rsa-nopub"),
                  issue(keys, "tok-ec-noderive", key_kind="p256"))
    token.import_key(setup.rsa.key, "rsa", b"\x01", setup.rsa.cert)
    token.import_key(setup.ec256.key, "ec256", b"\x02", setup.ec256.cert)
    token.import_key(setup.ec384.key, "ec384", b"\x03", setup.ec384.cert, with_public=False)
    token.keygen("EC:prime256v1", "generated", b"\x04")
    token.import_key(setup.rsa_nopub.key, "rsa-nopub", b"\x05", setup.rsa_nopub.cert, with_public=False)
    token.import_key(setup.ec_noderive.key, "ec-noderive", b"\x06", setup.ec_noderive.cert, derive=False)
    saved = {k: os.environ.get(k) for k in token.env}
    os.environ.update(token.env)
    p11.unload_modules()
    yield setup
    p11.unload_modules()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


# --- URI parsing (no token needed) -------------------------------------------------------------

def test_parse_uri() -> None:
    uri = p11.parse_uri("pkcs11:token=My%20Token;object=key%3b1;id=%01%ff;type=private"
                        "?pin-value=12%2634&module-path=/usr/lib/x.so")
    assert uri.token == "My Token"
    assert uri.object == "key;1"
    assert uri.id == b"\x01\xff"
    assert uri.type == "private"
    assert uri.pin == "12&34"
    assert uri.module_path == "/usr/lib/x.so"
    assert p11.parse_uri("PKCS11:object=a").object == "a"
    assert p11.parse_uri("pkcs11:").path == {}


@pytest.mark.parametrize("bad", ["pkcs11:token", "pkcs11:object=a;object=b", "pkcs11:type=foo", "file:x"])
def test_parse_uri_errors(bad: str) -> None:
    with pytest.raises(ValueError):
        p11.parse_uri(bad)


def test_redact() -> None:
    assert p11.redact("pkcs11:object=a?pin-value=1234&module-path=/x") == \
        "pkcs11:object=a?pin-value=***&module-path=/x"
    assert p11.is_pkcs11_uri("pkcs11:object=a") and not p11.is_pkcs11_uri("/tmp/key.pem")


def test_missing_module_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAUC_PKCS11_MODULE", raising=False)
    with pytest.raises(KeyLoadError, match=r"^failed to load PKCS11 private key for 'pkcs11:object=a': "
                                           r"environment variable RAUC_PKCS11_MODULE is not set"):
        p11.load_private_key("pkcs11:object=a")
    with pytest.raises(KeyLoadError, match=r"^failed to load PKCS11 certificate for 'pkcs11:object=a': "):
        p11.load_certificate("pkcs11:object=a")


def test_invalid_uri_is_key_load_error() -> None:
    with pytest.raises(KeyLoadError, match="invalid PKCS#11 URI: unknown object type 'foo'"):
        p11.load_private_key("pkcs11:object=a;type=foo")


# --- keys on the token -------------------------------------------------------------------------

def test_rsa_key(hsm: Setup) -> None:
    key = p11.load_private_key(hsm.token.uri("rsa", type_="private"))
    assert isinstance(key, p11.Pkcs11RSAPrivateKey) and isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048
    soft = hsm.rsa.key
    assert isinstance(soft, rsa.RSAPrivateKey)
    assert key.public_key().public_numbers() == soft.public_key().public_numbers()
    for alg in (hashes.SHA256(), hashes.SHA384(), hashes.SHA1()):
        sig = key.sign(b"signed data", padding.PKCS1v15(), alg)
        soft.public_key().verify(sig, b"signed data", padding.PKCS1v15(), alg)
        assert sig == soft.sign(b"signed data", padding.PKCS1v15(), alg)     # PKCS#1 v1.5 is deterministic
    digest = hashes.Hash(hashes.SHA256())
    digest.update(b"prehashed")
    sig = key.sign(digest.finalize(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    soft.public_key().verify(sig, b"prehashed", padding.PKCS1v15(), hashes.SHA256())
    ct = soft.public_key().encrypt(b"k" * 32, padding.PKCS1v15())
    assert key.decrypt(ct, padding.PKCS1v15()) == b"k" * 32
    with pytest.raises(ValueError):
        key.sign(b"x", padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    with pytest.raises(TypeError):
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())


def test_rsa_public_key_from_certificate(hsm: Setup) -> None:
    key = p11.load_private_key(hsm.token.uri("rsa-nopub"))
    soft = hsm.rsa_nopub.key
    assert key.public_key().public_numbers() == soft.public_key().public_numbers()


@pytest.mark.parametrize(("label", "curve"), [("ec256", "secp256r1"), ("ec384", "secp384r1")])
def test_ec_key(hsm: Setup, label: str, curve: str) -> None:
    key = p11.load_private_key(hsm.token.uri(label))
    assert isinstance(key, p11.Pkcs11ECPrivateKey) and isinstance(key, ec.EllipticCurvePrivateKey)
    soft = getattr(hsm, label).key
    assert key.curve.name == curve
    assert key.public_key().public_numbers() == soft.public_key().public_numbers()
    sig = key.sign(b"signed data", ec.ECDSA(hashes.SHA256()))
    soft.public_key().verify(sig, b"signed data", ec.ECDSA(hashes.SHA256()))   # DER signature
    peer = ec.generate_private_key(key.curve)
    shared = key.exchange(ec.ECDH(), peer.public_key())
    assert shared == soft.exchange(ec.ECDH(), peer.public_key())
    assert shared == peer.exchange(ec.ECDH(), key.public_key())
    with pytest.raises(ValueError):
        key.exchange(ec.ECDH(), ec.generate_private_key(ec.SECP521R1()).public_key())


def test_key_generated_on_token(hsm: Setup) -> None:
    key = p11.load_private_key(hsm.token.uri("generated", key_id=b"\x04"))
    assert isinstance(key, p11.Pkcs11ECPrivateKey)
    peer = ec.generate_private_key(ec.SECP256R1())
    assert key.exchange(ec.ECDH(), peer.public_key()) == peer.exchange(ec.ECDH(), key.public_key())
    sig = key.sign(b"x", ec.ECDSA(hashes.SHA384()))
    key.public_key().verify(sig, b"x", ec.ECDSA(hashes.SHA384()))


def test_select_by_id_only(hsm: Setup) -> None:
    key = p11.load_private_key(f"pkcs11:token={hsm.token.label};id=%02")
    assert key.public_key().public_numbers() == hsm.ec256.key.public_key().public_numbers()


def test_load_certificate(hsm: Setup) -> None:
    assert p11.load_certificate(hsm.token.uri("rsa", type_="cert")) == hsm.rsa.cert
    assert p11.load_certificate(hsm.token.uri("ec384")) == hsm.ec384.cert
    with pytest.raises(KeyLoadError, match=r"^failed to load PKCS11 certificate for '.*object=generated': "
                                           r"no matching certificate found on the token$"):
        p11.load_certificate(hsm.token.uri("generated"))


@pytest.mark.parametrize("label", ["rsa", "ec256", "ec384"])
def test_envelope_decrypt_with_token_key(hsm: Setup, label: str) -> None:
    content = bytes.fromhex("3082012c") + bytes(300)
    certs = [hsm.rsa.cert, hsm.ec256.cert, hsm.ec384.cert, hsm.rsa_nopub.cert]
    der = envelope.encrypt(content, certs)
    key = p11.load_private_key(hsm.token.uri(label))
    assert envelope.decrypt(der, key) == content
    cert = p11.load_certificate(hsm.token.uri(label, type_="cert"))
    assert envelope.decrypt(der, key, cert) == content
    assert envelope.decrypt(envelope.encrypt(content, certs, use_ski=True), key) == content


def test_missing_object(hsm: Setup) -> None:
    uri = hsm.token.uri("nope")
    with pytest.raises(KeyLoadError) as info:
        p11.load_private_key(uri)
    assert str(info.value) == (f"failed to load PKCS11 private key for '{uri}': "
                               "no matching private key found on the token")
    assert "\n" not in str(info.value)


def test_wrong_type(hsm: Setup) -> None:
    with pytest.raises(KeyLoadError, match="URI names an object of type 'cert', not a private key"):
        p11.load_private_key(hsm.token.uri("rsa", type_="cert"))


def test_missing_token(hsm: Setup) -> None:
    with pytest.raises(KeyLoadError, match=r"^failed to load PKCS11 private key for 'pkcs11:token=absent;"
                                           r"object=rsa': no matching token found$"):
        p11.load_private_key("pkcs11:token=absent;object=rsa")


def _load_in_fresh_process(hsm: Setup, uri: str, pin: str | None) -> str:
    """A new process, so the login state of this one does not matter (PKCS#11 logins are per process)."""
    env = {**os.environ, **hsm.token.env}
    env.pop("RAUC_PKCS11_PIN")
    if pin is not None:
        env["RAUC_PKCS11_PIN"] = pin
    code = ("import sys\nfrom pyrauc import pkcs11\n"
            "try:\n    print(pkcs11.load_private_key(sys.argv[1]).key_size)\n"
            "except Exception as e:\n    print(type(e).__name__ + ': ' + str(e))\n")
    root = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-c", code, uri], env=env, capture_output=True, text=True,
                         cwd=root, check=True)
    return res.stdout.strip()


def test_pin_handling(hsm: Setup) -> None:
    uri = hsm.token.uri("rsa")
    assert _load_in_fresh_process(hsm, uri, hsm.token.pin) == "2048"
    assert _load_in_fresh_process(hsm, uri, "999999") == \
        f"KeyLoadError: failed to load PKCS11 private key for '{uri}': PIN incorrect"
    assert _load_in_fresh_process(hsm, uri + "?pin-value=000000", hsm.token.pin) == \
        f"KeyLoadError: failed to load PKCS11 private key for '{uri}?pin-value=***': PIN incorrect"
    assert _load_in_fresh_process(hsm, uri + f"?pin-value={hsm.token.pin}", None) == "2048"
    assert _load_in_fresh_process(hsm, uri, None) == (
        f"KeyLoadError: failed to load PKCS11 private key for '{uri}': no matching private key found "
        "on the token (is RAUC_PKCS11_PIN set?)")


def test_token_refusing_ecdh_is_reported(hsm: Setup) -> None:
    key = p11.load_private_key(hsm.token.uri("ec-noderive"))
    der = envelope.encrypt(b"\x30\x00", [hsm.ec_noderive.cert])
    with pytest.raises(EnvelopeError, match=r"^Failed to decrypt CMS EnvelopedData: ECDH with the decryption "
                                            r"key failed: the token does not allow key derivation with this "
                                            r"key \(CKA_DERIVE is false\)$"):
        envelope.decrypt(der, key)
    sig = key.sign(b"x", ec.ECDSA(hashes.SHA256()))     # signing still works
    hsm.ec_noderive.key.public_key().verify(sig, b"x", ec.ECDSA(hashes.SHA256()))
