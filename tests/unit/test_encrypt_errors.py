"""Bad input to ``pyrauc encrypt`` and to decryption (``info``/``extract``/``extract-signature``).

Every case must end with exit code 1, exactly one clear error line on stderr (diagnostics such as
"Reading bundle" aside, see tests/helpers/bundles.py error_lines) and no output file left behind
(neither the requested output nor a temporary file next to it).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.bundles import error_lines, pyrauc, pyrauc_bundle, write_content
from tests.helpers.pki import Issued, Pki, issue, write_pem_bundle
from tests.helpers.softhsm import SoftHsmToken, make_token_or_skip

DECRYPT_FAILED = "Failed to decrypt bundle: Failed to decrypt CMS EnvelopedData: "


@dataclass
class Setup:
    dir: Path
    crypt: Path         # unencrypted crypt bundle
    verity: Path        # verity bundle (same signer)
    encrypted: Path     # crypt encrypted for rsa and ec
    rsa: Issued
    ec: Issued
    outsider_rsa: Issued
    outsider_ec: Issued
    keyring: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Setup:
    d = tmp_path_factory.mktemp("encerr")
    bundles = {}
    for fmt in ("crypt", "verity"):
        content = write_content(d / f"content-{fmt}", fmt=fmt, rootfs_size=16384)
        bundles[fmt] = pyrauc_bundle(content, d / f"{fmt}.raucb", pki.signer_direct)
    rsa_dev = issue(d, "dev-rsa", key_kind="rsa2048")
    ec_dev = issue(d, "dev-ec", key_kind="p256")
    to = write_pem_bundle(d / "to.pem", [rsa_dev.cert, ec_dev.cert])
    enc = d / "enc.raucb"
    pyrauc("encrypt", "--to", to, "--keyring", pki.keyring, bundles["crypt"], enc, check=True)
    return Setup(d, bundles["crypt"], bundles["verity"], enc, rsa_dev, ec_dev,
                 issue(d, "outsider-rsa", key_kind="rsa2048"), issue(d, "outsider-ec", key_kind="p256"), pki.keyring)


def assert_one_error(proc: subprocess.CompletedProcess[str], expected: str, *, prefix: bool = False) -> str:
    """Exit code 1 and exactly one error line equal to (or starting with) ``expected``."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    if prefix:
        assert lines[0].startswith(expected), lines[0]
    else:
        assert lines[0] == expected
    return lines[0]


def assert_nothing_left(directory: Path, name: str) -> None:
    assert not (directory / name).exists()
    assert not [p for p in directory.iterdir() if p.name.startswith(f".{name}.")], list(directory.iterdir())


# --- pyrauc encrypt ---------------------------------------------------------------------------

def test_refuses_non_crypt_bundle(tmp_path: Path, setup: Setup) -> None:
    to = write_pem_bundle(tmp_path / "to.pem", [setup.rsa.cert])
    res = pyrauc("encrypt", "--to", to, "--keyring", setup.keyring, setup.verity, tmp_path / "out.raucb")
    assert_one_error(res, "Failed to create bundle: Refused to encrypt input bundle that is not in 'crypt' format.")
    assert_nothing_left(tmp_path, "out.raucb")


def test_refuses_unverifiable_input(tmp_path: Path, setup: Setup, pki: Pki) -> None:
    to = write_pem_bundle(tmp_path / "to.pem", [setup.rsa.cert])
    res = pyrauc("encrypt", "--to", to, "--keyring", pki.other_keyring, setup.crypt, tmp_path / "out.raucb")
    assert_one_error(res, "signature verification failed: ", prefix=True)    # as rauc 1.8: no prefix
    assert_nothing_left(tmp_path, "out.raucb")


def test_refuses_encrypted_input(tmp_path: Path, setup: Setup) -> None:
    """An already encrypted bundle cannot be opened without a key (encrypt takes none)."""
    to = write_pem_bundle(tmp_path / "to.pem", [setup.rsa.cert])
    res = pyrauc("encrypt", "--to", to, "--keyring", setup.keyring, setup.encrypted, tmp_path / "out.raucb")
    assert_one_error(res, "Encrypted bundle detected", prefix=True)
    assert_nothing_left(tmp_path, "out.raucb")


def test_key_file_as_recipient(tmp_path: Path, setup: Setup) -> None:
    """rauc 1.8 writes a bundle "Encrypted for 0 recipient" here (and for an empty file); pyrauc refuses."""
    res = pyrauc("encrypt", "--to", setup.rsa.key_path, "--keyring", setup.keyring, setup.crypt,
                 tmp_path / "out.raucb")
    assert_one_error(res, "Failed to create bundle: Failed to encrypt bundle: "
                          f"Failed to parse cert file '{setup.rsa.key_path}': Expecting: CERTIFICATE")
    assert_nothing_left(tmp_path, "out.raucb")


def test_empty_recipient_file(tmp_path: Path, setup: Setup) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    res = pyrauc("encrypt", "--to", empty, "--keyring", setup.keyring, setup.crypt, tmp_path / "out.raucb")
    assert_one_error(res, f"Failed to create bundle: Failed to encrypt bundle: Failed to parse cert file '{empty}': "
                          "Expecting: CERTIFICATE")
    assert_nothing_left(tmp_path, "out.raucb")


def test_missing_recipient_file(tmp_path: Path, setup: Setup) -> None:
    missing = tmp_path / "nope.pem"
    res = pyrauc("encrypt", "--to", missing, "--keyring", setup.keyring, setup.crypt, tmp_path / "out.raucb")
    assert_one_error(res, f"Failed to create bundle: Failed to encrypt bundle: Failed to load cert file '{missing}'")
    assert_nothing_left(tmp_path, "out.raucb")


def test_missing_to(tmp_path: Path, setup: Setup) -> None:
    res = pyrauc("encrypt", "--keyring", setup.keyring, setup.crypt, tmp_path / "out.raucb")
    assert_one_error(res, "One or multiple recipient certificates must be provided (via --to)")
    assert_nothing_left(tmp_path, "out.raucb")


def test_output_exists(tmp_path: Path, setup: Setup) -> None:
    to = write_pem_bundle(tmp_path / "to.pem", [setup.rsa.cert])
    out = tmp_path / "out.raucb"
    out.write_bytes(b"precious")
    res = pyrauc("encrypt", "--to", to, "--keyring", setup.keyring, setup.crypt, out)
    line = assert_one_error(res, "Failed to create bundle: ", prefix=True)
    assert "already exists" in line
    assert out.read_bytes() == b"precious"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.raucb.")]


# --- decryption -------------------------------------------------------------------------------

@pytest.mark.parametrize("who", ["outsider_rsa", "outsider_ec"])
def test_wrong_decryption_key(who: str, tmp_path: Path, setup: Setup) -> None:
    key = getattr(setup, who).key_path
    info = pyrauc("info", "--keyring", setup.keyring, "--key", key, setup.encrypted)
    assert_one_error(info, DECRYPT_FAILED, prefix=True)
    assert info.stdout == ""
    ext = pyrauc("extract", "--keyring", setup.keyring, "--key", key, setup.encrypted, tmp_path / "out")
    assert_one_error(ext, DECRYPT_FAILED, prefix=True)
    assert not (tmp_path / "out").exists()
    sig = pyrauc("extract-signature", "--keyring", setup.keyring, "--key", key, setup.encrypted, tmp_path / "s")
    assert_one_error(sig, DECRYPT_FAILED, prefix=True)
    assert not (tmp_path / "s").exists()


def test_wrong_cert_for_key(setup: Setup) -> None:
    """--cert names a recipient, but the key does not belong to it."""
    res = pyrauc("info", "--keyring", setup.keyring, "--key", setup.ec.key_path, "--cert", setup.rsa.cert_path,
                 setup.encrypted)
    assert_one_error(res, DECRYPT_FAILED, prefix=True)


def _corrupt(setup: Setup, path: Path, where: str) -> Path:
    data = bytearray(setup.encrypted.read_bytes())
    size = int.from_bytes(data[-8:], "big")
    start, end = len(data) - 8 - size, len(data) - 8
    if where == "content":          # inside the encrypted SignedData (near the end of the CMS)
        pos = end - 40
    elif where == "header":         # the outer SEQUENCE tag and length
        pos = start
    else:                           # a quarter in: the end of the recipient infos / the algorithm
        pos = start + size // 4
    for i in range(pos, pos + 4):
        data[i] ^= 0xA5
    path.write_bytes(bytes(data))
    return path


#: what the single error line starts with, per damaged place. rauc 1.8 says "signature verification
#: failed: ..." for "content" (the garbled SignedData fails verification) and "Invalid bundle format:
#: Signature data is no valid CMS" for "header" and "middle" (OpenSSL's strict DER parser).
CORRUPTED = {
    "content": ("signature verification failed: ", "Failed to decrypt bundle: "),
    "header": ("Failed to parse CMS", "Invalid bundle format: "),
    "middle": ("Failed to decrypt bundle: ", "Failed to parse CMS", "Invalid bundle format: "),
}


@pytest.mark.parametrize("where", list(CORRUPTED))
@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_corrupted_envelope(kind: str, where: str, tmp_path: Path, setup: Setup) -> None:
    bad = _corrupt(setup, tmp_path / "bad.raucb", where)
    key = getattr(setup, kind).key_path
    info = pyrauc("info", "--keyring", setup.keyring, "--key", key, bad)
    assert info.returncode == 1, info.stdout
    lines = error_lines(info)
    assert len(lines) == 1 and "Traceback" not in info.stderr, info.stderr
    assert lines[0].startswith(CORRUPTED[where]), lines[0]
    ext = pyrauc("extract", "--keyring", setup.keyring, "--key", key, bad, tmp_path / "out")
    assert ext.returncode == 1 and len(error_lines(ext)) == 1, ext.stderr
    assert not (tmp_path / "out").exists()


# --- PKCS#11 ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory, setup: Setup) -> SoftHsmToken:
    tok = make_token_or_skip(tmp_path_factory.mktemp("encerr-hsm"))
    tok.import_key(setup.rsa.key, "dec-rsa", b"\x21", setup.rsa.cert)
    tok.import_key(setup.ec.key, "dec-ec", b"\x22", setup.ec.cert)
    return tok


@pytest.mark.pkcs11
def test_pkcs11_sanity(token: SoftHsmToken, setup: Setup) -> None:
    for label in ("dec-rsa", "dec-ec"):
        res = pyrauc("info", "--keyring", setup.keyring, "--key", token.uri(label, type_="private"), setup.encrypted,
                     env=token.env)
        assert res.returncode == 0, res.stderr


@pytest.mark.pkcs11
def test_pkcs11_missing_object(tmp_path: Path, token: SoftHsmToken, setup: Setup) -> None:
    uri = token.uri("no-such-key", type_="private")
    res = pyrauc("info", "--keyring", setup.keyring, "--key", uri, setup.encrypted, env=token.env)
    line = assert_one_error(res, "", prefix=True)
    assert "no-such-key" in line and "PKCS11" in line.upper()
    ext = pyrauc("extract", "--keyring", setup.keyring, "--key", uri, setup.encrypted, tmp_path / "out",
                 env=token.env)
    assert_one_error(ext, "", prefix=True)
    assert not (tmp_path / "out").exists()


@pytest.mark.pkcs11
def test_pkcs11_wrong_pin(tmp_path: Path, token: SoftHsmToken, setup: Setup) -> None:
    env = {**token.env, "RAUC_PKCS11_PIN": "0000"}
    res = pyrauc("info", "--keyring", setup.keyring, "--key", token.uri("dec-rsa", type_="private"),
                 setup.encrypted, env=env)
    line = assert_one_error(res, "", prefix=True)
    assert "PIN" in line.upper()
    assert "0000" not in res.stderr                 # the PIN is never echoed


@pytest.mark.pkcs11
def test_pkcs11_wrong_token_key(token: SoftHsmToken, setup: Setup, tmp_path: Path) -> None:
    """A token key that is no recipient: the usual decryption error."""
    other = issue(tmp_path, "other", key_kind="p256")
    to = write_pem_bundle(tmp_path / "to.pem", [other.cert])
    enc = tmp_path / "enc.raucb"
    pyrauc("encrypt", "--to", to, "--keyring", setup.keyring, setup.crypt, enc, check=True)
    res = pyrauc("info", "--keyring", setup.keyring, "--key", token.uri("dec-ec", type_="private"), enc,
                 env=token.env)
    assert_one_error(res, DECRYPT_FAILED, prefix=True)
