"""Issue 4 at the CLI level: encrypted bundles between the ``pyrauc`` and Debian's ``rauc`` 1.8 CLIs.

The library-level interop (pyrauc.envelope against rauc/openssl) lives in
test_envelope_interop.py; here every step is a real command line:

* ``rauc encrypt`` -> ``pyrauc info/extract --key`` (RSA, P-256, P-384; recipient first or last
  in a concatenated PEM; with and without ``--cert``);
* ``pyrauc encrypt`` (issuer+serial and ``--recipient-key-id``) -> ``rauc info/extract --key``,
  extracted files identical to those of the unencrypted bundle;
* ``--dump-recipients``, the "no decryption key" error, PKCS#11 keys on a SoftHSM2 token (decrypt
  and sign), resign / replace-signature / extract-signature of encrypted bundles.
"""

from __future__ import annotations

import random
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.x509.oid import NameOID

from tests.helpers.bundles import (
    CryptBundle,
    error_lines,
    pyrauc,
    rauc,
    rauc_crypt_bundle,
    split_bundle,
    write_images_content,
)
from tests.helpers.pki import Issued, Pki, issue, make_devices, write_pem_bundle
from tests.helpers.softhsm import SoftHsmToken, make_token_or_skip

pytestmark = pytest.mark.interop

KINDS = ["rsa2048", "p256", "p384"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
NO_KEY = ("Encrypted bundle detected, but no decryption key given. "
          "Use --key=<PEMFILE|PKCS11-URL> to provide one.")


def plain(text: str) -> str:
    """``text`` without ANSI colour codes."""
    return ANSI.sub("", text)


def tree(directory: Path) -> dict[str, bytes]:
    """Relative path -> content of every file below ``directory``."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def recipients_section(stdout: str) -> tuple[int, str]:
    """(count from the "N Recipients:" header, the text up to "Certificate Chain:") of --dump-recipients."""
    text = plain(stdout)
    m = re.search(r"^(\d+) Recipients:\n", text, re.M)
    assert m, text
    return int(m.group(1)), text[m.end():text.index("Certificate Chain:")]


@dataclass
class Crypt(CryptBundle):
    files: dict[str, bytes]   # what `rauc extract` gives for it


@pytest.fixture(scope="module")
def crypt(tmp_path_factory: pytest.TempPathFactory, pki: Pki, rauc_bin: str) -> Crypt:
    d = tmp_path_factory.mktemp("crypt")
    made = rauc_crypt_bundle(rauc_bin, d, {"rootfs": random.Random(4).randbytes(20000), "appfs": b"appfs\n" * 3000},
                             pki.signer_direct, pki.keyring)
    rauc(rauc_bin, "extract", "--keyring", pki.keyring, made.path, d / "ref", check=True)
    return Crypt(**vars(made), files=tree(d / "ref"))


@pytest.fixture(scope="module")
def devices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Issued]:
    return make_devices(tmp_path_factory.mktemp("devices"), "dev", {
        **{kind: kind for kind in KINDS}, "extra-ec": "p256", "extra-rsa": "rsa2048", "outsider": "p256"})


def recipients_for(devices: dict[str, Issued], me: str, position: str) -> list[Issued]:
    others = [d for k, d in devices.items() if k not in (me, "outsider")]
    return [devices[me], *others] if position == "first" else [*others, devices[me]]


def rauc_encrypt(rauc_bin: str, crypt: Crypt, to: Path, out: Path) -> Path:
    res = rauc(rauc_bin, "encrypt", "--to", to, "--keyring", crypt.keyring, crypt.path, out, check=True)
    assert "Encrypted bundle written to" in res.stdout + res.stderr
    return out


def pyrauc_encrypt(crypt: Crypt, to: Path, out: Path, *extra: str) -> Path:
    res = pyrauc("encrypt", "--to", to, "--keyring", crypt.keyring, *extra, crypt.path, out, check=True)
    assert f"Encrypted bundle written to {out}" in res.stdout
    return out


# --- rauc encrypt -> pyrauc info / extract --------------------------------------------------

@pytest.mark.parametrize("with_cert", [False, True], ids=["key-only", "key+cert"])
@pytest.mark.parametrize("position", ["first", "last"])
@pytest.mark.parametrize("kind", KINDS)
def test_rauc_encrypt_pyrauc_decrypts(kind: str, position: str, with_cert: bool, tmp_path: Path, crypt: Crypt,
                                      devices: dict[str, Issued], rauc_bin: str) -> None:
    recips = recipients_for(devices, kind, position)
    to = write_pem_bundle(tmp_path / "to.pem", [r.cert for r in recips])
    enc = rauc_encrypt(rauc_bin, crypt, to, tmp_path / "enc.raucb")
    me = devices[kind]
    cert = ["--cert", str(me.cert_path)] if with_cert else []
    info = pyrauc("info", "--keyring", crypt.keyring, "--key", me.key_path, *cert, enc)
    assert info.returncode == 0, info.stderr
    assert re.search(r"Bundle Format:\s+crypt\s+\[encrypted CMS\]", plain(info.stdout)), info.stdout
    assert "Compatible:" in info.stdout and "'Test'" in info.stdout
    out = tmp_path / "out"
    ext = pyrauc("extract", "--keyring", crypt.keyring, "--key", me.key_path, *cert, enc, out)
    assert ext.returncode == 0, ext.stderr
    assert tree(out) == crypt.files


# --- pyrauc encrypt -> rauc info / extract --------------------------------------------------

@pytest.mark.parametrize("key_id", [False, True], ids=["issuer-serial", "recipient-key-id"])
@pytest.mark.parametrize("kind", KINDS)
def test_pyrauc_encrypt_rauc_decrypts(kind: str, key_id: bool, tmp_path: Path, crypt: Crypt,
                                      devices: dict[str, Issued], rauc_bin: str) -> None:
    recips = recipients_for(devices, kind, "last")
    to = write_pem_bundle(tmp_path / "to.pem", [r.cert for r in recips])
    enc = pyrauc_encrypt(crypt, to, tmp_path / "enc.raucb", *(["--recipient-key-id"] if key_id else []))
    payload, _ = split_bundle(enc)
    assert payload == crypt.payload
    me = devices[kind]
    info = rauc(rauc_bin, "info", "--keyring", crypt.keyring, "--key", me.key_path, enc)
    assert info.returncode == 0, info.stderr
    assert re.search(r"Bundle Format:\s+crypt\s+\[encrypted CMS\]", plain(info.stdout)), info.stdout
    out = tmp_path / "out"
    ext = rauc(rauc_bin, "extract", "--keyring", crypt.keyring, "--key", me.key_path, enc, out)
    assert ext.returncode == 0, ext.stderr
    assert tree(out) == crypt.files
    # a non-recipient is refused by rauc
    bad = rauc(rauc_bin, "info", "--keyring", crypt.keyring, "--key", devices["outsider"].key_path, enc)
    assert bad.returncode != 0 and "Failed to decrypt CMS EnvelopedData" in bad.stderr


def test_pyrauc_encrypt_several_to_options(tmp_path: Path, crypt: Crypt, devices: dict[str, Issued],
                                           rauc_bin: str) -> None:
    """``--to`` is repeatable; every certificate of every file is a recipient."""
    a = write_pem_bundle(tmp_path / "a.pem", [devices["rsa2048"].cert, devices["p256"].cert])
    b = write_pem_bundle(tmp_path / "b.pem", [devices["p384"].cert])
    enc = tmp_path / "enc.raucb"
    res = pyrauc("encrypt", "--to", a, "--to", b, "--keyring", crypt.keyring, crypt.path, enc, check=True)
    assert "Encrypted for 3 recipients" in res.stderr   # a log line, on stderr as in RAUC
    for kind in KINDS:
        rauc(rauc_bin, "info", "--keyring", crypt.keyring, "--key", devices[kind].key_path, enc, check=True)


@pytest.mark.parametrize("layout", ["shared-key", "per-recipient"])
def test_pyrauc_encrypt_ec_layouts(layout: str, tmp_path: Path, crypt: Crypt, devices: dict[str, Issued],
                                   rauc_bin: str) -> None:
    """``--ec-layout``: both layouts decrypt in rauc 1.8 as every recipient; an unknown one is a usage error."""
    recips = recipients_for(devices, "p256", "first")
    to = write_pem_bundle(tmp_path / "to.pem", [r.cert for r in recips])
    enc = pyrauc_encrypt(crypt, to, tmp_path / "enc.raucb", f"--ec-layout={layout}")
    originators = re.findall(rb"\x06\x07\x2a\x86\x48\xce\x3d\x02\x01\x03\x42\x00(.{65})", split_bundle(enc)[1],
                             re.S)
    assert len(originators) == 2 and (len(set(originators)) == 1) == (layout == "shared-key")   # two P-256
    for r in recips:
        rauc(rauc_bin, "info", "--keyring", crypt.keyring, "--key", r.key_path, enc, check=True)
    bad = pyrauc("encrypt", "--ec-layout=other", "--to", to, "--keyring", crypt.keyring, crypt.path,
                 tmp_path / "bad.raucb")
    assert bad.returncode == 1 and error_lines(bad) == ["Unknown EC layout 'other' (use shared-key or per-recipient)"]
    assert not (tmp_path / "bad.raucb").exists()


# --- info details ---------------------------------------------------------------------------

@pytest.mark.parametrize("maker", ["rauc", "pyrauc", "pyrauc-key-id"])
def test_dump_recipients_lists_exactly_the_recipients(maker: str, tmp_path: Path, crypt: Crypt,
                                                      devices: dict[str, Issued], rauc_bin: str) -> None:
    recips = recipients_for(devices, "p256", "first")
    to = write_pem_bundle(tmp_path / "to.pem", [r.cert for r in recips])
    enc = tmp_path / "enc.raucb"
    if maker == "rauc":
        rauc_encrypt(rauc_bin, crypt, to, enc)
    else:
        pyrauc_encrypt(crypt, to, enc, *(["--recipient-key-id"] if maker == "pyrauc-key-id" else []))
    mine = pyrauc("info", "--keyring", crypt.keyring, "--key", devices["p256"].key_path, "--dump-recipients", enc)
    assert mine.returncode == 0, mine.stderr
    count, section = recipients_section(mine.stdout)
    assert count == len(recips)
    if maker == "pyrauc-key-id":
        # rauc 1.8 prints "<keyid>" (without a newline) for subjectKeyIdentifier recipients
        assert re.findall(r"(\d+)   <keyid>", section) == [str(i) for i in range(count)]
    else:
        issuers = re.findall(r"^\s*\d+   Issuer:    O = Test Org, CN = (\S+)$", section, re.M)
        assert sorted(issuers) == sorted(r.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
                                         for r in recips)
        serials = re.findall(r"^\s+Serial:    (\S+)$", section, re.M)
        assert sorted(int(x, 0) for x in serials) == sorted(r.cert.serial_number for r in recips)
    theirs = rauc(rauc_bin, "info", "--keyring", crypt.keyring, "--key", devices["p256"].key_path,
                  "--dump-recipients", enc, check=True)
    assert recipients_section(theirs.stdout) == (count, section)


def test_info_without_key_fails(tmp_path: Path, crypt: Crypt, devices: dict[str, Issued], rauc_bin: str) -> None:
    to = write_pem_bundle(tmp_path / "to.pem", [devices["p256"].cert])
    enc = rauc_encrypt(rauc_bin, crypt, to, tmp_path / "enc.raucb")
    for cmd in (["info"], ["extract-signature"]):
        extra = [tmp_path / "sig.der"] if cmd == ["extract-signature"] else []
        res = pyrauc(*cmd, "--keyring", crypt.keyring, enc, *extra)
        assert res.returncode == 1
        assert error_lines(res) == [NO_KEY]
        assert res.stdout == ""
    assert not (tmp_path / "sig.der").exists()


def test_unencrypted_crypt_bundle_info(crypt: Crypt) -> None:
    res = pyrauc("info", "--keyring", crypt.keyring, crypt.path, check=True)
    assert re.search(r"Bundle Format:\s+crypt\s+\[unencrypted CMS\]", plain(res.stdout))


# --- resign, replace-signature, extract-signature of encrypted bundles -----------------------

@pytest.fixture
def encrypted(tmp_path: Path, crypt: Crypt, devices: dict[str, Issued], rauc_bin: str) -> Path:
    """``crypt`` encrypted by rauc 1.8 for the RSA and the P-384 device."""
    to = write_pem_bundle(tmp_path / "to.pem", [devices["rsa2048"].cert, devices["p384"].cert])
    return rauc_encrypt(rauc_bin, crypt, to, tmp_path / "enc.raucb")


def _dump(rauc_bin: str, keyring: Path, key: Path, path: Path) -> tuple[int, str]:
    res = rauc(rauc_bin, "info", "--keyring", keyring, "--key", key, "--dump-recipients", path, check=True)
    assert re.search(r"crypt\s+\[encrypted CMS\]", plain(res.stdout)), res.stdout
    return recipients_section(res.stdout)


@pytest.mark.parametrize("decrypt_with", ["rsa2048", "p384"])
def test_resign_encrypted_stays_encrypted(decrypt_with: str, tmp_path: Path, encrypted: Path, crypt: Crypt,
                                          pki: Pki, devices: dict[str, Issued], rauc_bin: str) -> None:
    out = tmp_path / "resigned.raucb"
    res = pyrauc("resign", "--keyring", crypt.keyring, "--decrypt-key", devices[decrypt_with].key_path,
                 "--cert", pki.signer.cert_path, "--key", pki.signer.key_path,
                 "--intermediate", pki.intermediate.cert_path, encrypted, out)
    assert res.returncode == 0, res.stderr
    assert split_bundle(out)[0] == crypt.payload
    assert split_bundle(out)[1][:1] == b"\x30"
    before = _dump(rauc_bin, crypt.keyring, devices["rsa2048"].key_path, encrypted)
    for kind in ("rsa2048", "p384"):
        assert _dump(rauc_bin, crypt.keyring, devices[kind].key_path, out) == before
        info = rauc(rauc_bin, "info", "--keyring", crypt.keyring, "--key", devices[kind].key_path, out, check=True)
        assert "CN = signer" in info.stdout            # the new signer (under the intermediate)
    outdir = tmp_path / "x"
    rauc(rauc_bin, "extract", "--keyring", crypt.keyring, "--key", devices["p384"].key_path, out, outdir,
         check=True)
    assert tree(outdir) == crypt.files
    # still refused without a key
    assert rauc(rauc_bin, "info", "--keyring", crypt.keyring, out).returncode != 0


def test_replace_signature_encrypted_stays_encrypted(tmp_path: Path, encrypted: Path, crypt: Crypt, pki: Pki,
                                                     devices: dict[str, Issued], rauc_bin: str) -> None:
    # a new detached-in-CMS signature of the same manifest: resign the plain crypt bundle, take its CMS
    resigned = tmp_path / "plain-resigned.raucb"
    # (rauc 1.8 cannot resign crypt bundles: it runs unsquashfs on the encrypted payload)
    pyrauc("resign", "--keyring", crypt.keyring, "--cert", pki.signer_ec.cert_path, "--key", pki.signer_ec.key_path,
           "--intermediate", pki.intermediate.cert_path, crypt.path, resigned, check=True)
    newsig = tmp_path / "new.sig"
    newsig.write_bytes(split_bundle(resigned)[1])
    out = tmp_path / "replaced.raucb"
    res = pyrauc("replace-signature", "--keyring", crypt.keyring, "--decrypt-key", devices["rsa2048"].key_path,
                 encrypted, newsig, out)
    assert res.returncode == 0, res.stderr
    assert split_bundle(out)[0] == crypt.payload
    before = _dump(rauc_bin, crypt.keyring, devices["rsa2048"].key_path, encrypted)
    assert _dump(rauc_bin, crypt.keyring, devices["p384"].key_path, out) == before
    info = rauc(rauc_bin, "info", "--keyring", crypt.keyring, "--key", devices["p384"].key_path, out, check=True)
    assert "CN = signer-ec" in info.stdout
    # pyrauc reads its own output, and the decrypted CMS is the new signature
    sig = tmp_path / "out.sig"
    pyrauc("extract-signature", "--keyring", crypt.keyring, "--key", devices["rsa2048"].key_path, out, sig,
           check=True)
    assert sig.read_bytes() == newsig.read_bytes()


@pytest.mark.parametrize("kind", ["rsa2048", "p384"])
def test_extract_signature_of_encrypted(kind: str, tmp_path: Path, encrypted: Path, crypt: Crypt,
                                        devices: dict[str, Issued], rauc_bin: str) -> None:
    sig = tmp_path / "sig.der"
    res = pyrauc("extract-signature", "--keyring", crypt.keyring, "--key", devices[kind].key_path, encrypted, sig)
    assert res.returncode == 0, res.stderr
    assert sig.read_bytes() == crypt.sigdata
    assert stat.S_IMODE(sig.stat().st_mode) == 0o600
    theirs = tmp_path / "theirs.der"
    rauc(rauc_bin, "extract-signature", "--keyring", crypt.keyring, "--key", devices[kind].key_path, encrypted,
         theirs, check=True)
    assert theirs.read_bytes() == sig.read_bytes()


# --- PKCS#11 (SoftHSM2) ---------------------------------------------------------------------

@dataclass
class Hsm:
    token: SoftHsmToken
    rsa: Issued
    ec: Issued
    signer: Issued


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Hsm:
    d = tmp_path_factory.mktemp("hsm")
    token = make_token_or_skip(d / "token")
    rsa_dev = issue(d, "hsm-rsa", key_kind="rsa2048")
    ec_dev = issue(d, "hsm-ec", key_kind="p256")
    signer = issue(d, "hsm-signer", issuer=pki.root, key_kind="p256")
    token.import_key(rsa_dev.key, "dec-rsa", b"\x11", rsa_dev.cert)
    token.import_key(ec_dev.key, "dec-ec", b"\x12", ec_dev.cert)
    token.import_key(signer.key, "sign-ec", b"\x13", signer.cert)
    return Hsm(token, rsa_dev, ec_dev, signer)


@pytest.mark.pkcs11
@pytest.mark.parametrize("maker", ["rauc", "pyrauc"])
@pytest.mark.parametrize("which", ["rsa", "ec"])
def test_pkcs11_decrypt(which: str, maker: str, tmp_path: Path, hsm: Hsm, crypt: Crypt,
                        devices: dict[str, Issued], rauc_bin: str) -> None:
    dev = hsm.rsa if which == "rsa" else hsm.ec
    label = "dec-rsa" if which == "rsa" else "dec-ec"
    to = write_pem_bundle(tmp_path / "to.pem", [devices["p256"].cert, devices["rsa2048"].cert, dev.cert])
    enc = tmp_path / "enc.raucb"
    if maker == "rauc":
        rauc_encrypt(rauc_bin, crypt, to, enc)
    else:
        pyrauc_encrypt(crypt, to, enc)
    key_uri = hsm.token.uri(label, type_="private")
    info = pyrauc("info", "--keyring", crypt.keyring, "--key", key_uri, enc, env=hsm.token.env)
    assert info.returncode == 0, info.stderr
    assert re.search(r"crypt\s+\[encrypted CMS\]", plain(info.stdout))
    with_cert = pyrauc("info", "--keyring", crypt.keyring, "--key", key_uri,
                       "--cert", hsm.token.uri(label, type_="cert"), enc, env=hsm.token.env)
    assert with_cert.returncode == 0, with_cert.stderr
    out = tmp_path / "out"
    ext = pyrauc("extract", "--keyring", crypt.keyring, "--key", key_uri, enc, out, env=hsm.token.env)
    assert ext.returncode == 0, ext.stderr
    assert tree(out) == crypt.files


@pytest.mark.pkcs11
def test_pkcs11_sign_verified_by_rauc(tmp_path: Path, hsm: Hsm, crypt: Crypt, pki: Pki, rauc_bin: str) -> None:
    content = write_images_content(tmp_path / "content", {"rootfs": random.Random(7).randbytes(12000)},
                                   fmt="verity", version="2")
    out = tmp_path / "hsm.raucb"
    res = pyrauc("bundle", "--key", hsm.token.uri("sign-ec", type_="private"),
                 "--cert", hsm.token.uri("sign-ec", type_="cert"), content, out, env=hsm.token.env)
    assert res.returncode == 0, res.stderr
    info = rauc(rauc_bin, "info", "--keyring", pki.keyring, out)
    assert info.returncode == 0, info.stderr
    assert "CN = hsm-signer" in info.stdout
    ext = tmp_path / "x"
    rauc(rauc_bin, "extract", "--keyring", pki.keyring, out, ext, check=True)
    assert (ext / "rootfs.img").read_bytes() == (content / "rootfs.img").read_bytes()


# --- many recipients: beyond rauc 1.8's 64 KiB signature limit ---------------------------------

def test_many_recipients_beyond_64k(tmp_path: Path, crypt: Crypt, rauc_bin: str) -> None:
    """300 EC recipients: the CMS exceeds 64 KiB; rauc 1.8 and pyrauc's default refuse it, pyrauc
    reads it with ``-C system:max-bundle-signature-size=...`` (no system.conf needed)."""
    recips = [issue(tmp_path / "many", f"many-{i:03d}", key_kind="p256") for i in range(300)]
    to = write_pem_bundle(tmp_path / "to.pem", [r.cert for r in recips])
    enc = tmp_path / "enc.raucb"
    res = pyrauc("encrypt", "--to", to, "--keyring", crypt.keyring, crypt.path, enc, check=True)
    assert "Encrypted for 300 recipients" in res.stderr
    size = len(split_bundle(enc)[1])
    assert size > 64 * 1024
    last = recips[-1]
    theirs = rauc(rauc_bin, "info", "--keyring", crypt.keyring, "--key", last.key_path, enc)
    assert theirs.returncode != 0
    assert f"Signature size ({size}) exceeds 64KiB" in theirs.stderr
    mine = pyrauc("info", "--keyring", crypt.keyring, "--key", last.key_path, enc)
    assert mine.returncode == 1
    # (pyrauc words it like newer RAUC: "... exceeds max-bundle-signature-size (65536)")
    lines = error_lines(mine)
    assert len(lines) == 1 and lines[0].startswith(f"Invalid bundle format: Signature size ({size}) exceeds ")
    for extra in ([], ["--cert", str(last.cert_path)]):
        ok = pyrauc("-C", "system:max-bundle-signature-size=1M", "info", "--keyring", crypt.keyring,
                    "--key", last.key_path, *extra, "--dump-recipients", enc)
        assert ok.returncode == 0, ok.stderr
        assert "300 Recipients:" in ok.stdout
    out = tmp_path / "out"
    pyrauc("extract", "-C", "system:max-bundle-signature-size=1M", "--keyring", crypt.keyring,
           "--key", recips[0].key_path, enc, out, check=True)
    assert tree(out) == crypt.files
