"""EnvelopedData in both directions with Debian's rauc 1.8 and the openssl CLI.

* rauc 1.8 ``rauc encrypt`` -> pyrauc.envelope.decrypt returns exactly the bundle's SignedData;
* pyrauc.envelope.encrypt -> ``rauc info`` / ``rauc extract`` (RSA and EC keys, issuer+serial
  and subjectKeyIdentifier recipients) and ``openssl cms -decrypt`` read it;
* ``openssl cms -encrypt`` -> pyrauc decrypts it;
* ``rauc info --dump-recipients`` prints what pyrauc.envelope.format_recipients prints.
"""

from __future__ import annotations

import random
import re
import subprocess
from pathlib import Path

import pytest
from asn1crypto import cms as acms
from cryptography import x509

from pyrauc import envelope
from tests.helpers.bundles import CryptBundle, rauc_crypt_bundle, split_bundle, write_bundle
from tests.helpers.pki import Issued, Pki, issue, make_devices, write_pem_bundle

pytestmark = pytest.mark.interop

KINDS = ["rsa2048", "p256", "p384"]


def run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def crypt_bundle(tmp_path_factory: pytest.TempPathFactory, pki: Pki, rauc_bin: str) -> CryptBundle:
    """An unencrypted crypt bundle made by rauc 1.8 itself."""
    rootfs = random.Random(8192).randbytes(8192)   # incompressible: squashfs must exceed 4 KiB
    made = rauc_crypt_bundle(rauc_bin, tmp_path_factory.mktemp("cryptbundle"), {"rootfs": rootfs},
                             pki.signer_direct, pki.keyring)
    assert made.sigdata[:1] == b"\x30"
    return made


@pytest.fixture(scope="module")
def devices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Issued]:
    return make_devices(tmp_path_factory.mktemp("devices"), "device",
                        {**{kind: kind for kind in KINDS}, "other": "p256", "p521": "p521"})


def _others(devices: dict[str, Issued], kind: str) -> list[Issued]:
    return [d for k, d in devices.items() if k not in (kind, "p521")]


# --- rauc encrypt -> pyrauc decrypt ------------------------------------------------------------

@pytest.mark.parametrize("position", ["first", "last"])
@pytest.mark.parametrize("kind", KINDS)
def test_rauc_encrypt_pyrauc_decrypt(kind: str, position: str, tmp_path: Path, crypt_bundle: CryptBundle,
                                     devices: dict[str, Issued], rauc_bin: str) -> None:
    me = devices[kind]
    others = [d.cert for d in _others(devices, kind)]
    order = [me.cert, *others] if position == "first" else [*others, me.cert]
    to = write_pem_bundle(tmp_path / "to.pem", order)
    enc = tmp_path / "enc.raucb"
    res = run(rauc_bin, "encrypt", "--to", to, "--keyring", crypt_bundle.keyring, crypt_bundle.path, enc)
    assert f"Encrypted for {len(order)} recipients" in res.stdout + res.stderr
    payload, cms = split_bundle(enc)
    assert payload == crypt_bundle.payload
    assert envelope.decrypt(cms, me.key) == crypt_bundle.sigdata
    assert envelope.decrypt(cms, me.key, me.cert) == crypt_bundle.sigdata
    with pytest.raises(Exception, match="Failed to decrypt CMS EnvelopedData"):
        envelope.decrypt(cms, devices["p521"].key)


def test_rauc_dump_recipients_equals_format_recipients(tmp_path: Path, crypt_bundle: CryptBundle,
                                                       devices: dict[str, Issued], rauc_bin: str) -> None:
    """Both for rauc's own envelope and for pyrauc's (issuer+serial and key identifiers)."""
    certs = [d.cert for d in devices.values()]
    to = write_pem_bundle(tmp_path / "to.pem", certs)
    bundles = {"rauc": tmp_path / "rauc.raucb"}
    run(rauc_bin, "encrypt", "--to", to, "--keyring", crypt_bundle.keyring, crypt_bundle.path, bundles["rauc"])
    for name, ski in (("py", False), ("py-ski", True)):
        bundles[name] = write_bundle(tmp_path / f"{name}.raucb", crypt_bundle.payload,
                                     envelope.encrypt(crypt_bundle.sigdata, certs, use_ski=ski))
    for name, path in bundles.items():
        res = run(rauc_bin, "info", "--keyring", crypt_bundle.keyring, "--key", devices["p256"].key_path,
                  "--dump-recipients", path)
        mine = envelope.format_recipients(split_bundle(path)[1])
        start = res.stdout.index(f"{len(certs)} Recipients:")
        end = res.stdout.index("Certificate Chain:")
        assert res.stdout[start:end] == mine + "\n", name


def test_dump_recipients_single(tmp_path: Path, crypt_bundle: CryptBundle, devices: dict[str, Issued],
                                rauc_bin: str) -> None:
    env = envelope.encrypt(crypt_bundle.sigdata, [devices["rsa2048"].cert])
    path = write_bundle(tmp_path / "one.raucb", crypt_bundle.payload, env)
    res = run(rauc_bin, "info", "--keyring", crypt_bundle.keyring, "--key", devices["rsa2048"].key_path,
              "--dump-recipients", path)
    assert "1 Recipients:\n" in res.stdout
    assert envelope.format_recipients(env) in res.stdout


# --- pyrauc encrypt -> rauc info / extract, openssl cms -decrypt -------------------------------

@pytest.mark.parametrize("use_ski", [False, True], ids=["issuer-serial", "ski"])
@pytest.mark.parametrize("kind", KINDS)
def test_pyrauc_encrypt_rauc_decrypt(kind: str, use_ski: bool, tmp_path: Path, crypt_bundle: CryptBundle,
                                     devices: dict[str, Issued], rauc_bin: str) -> None:
    me = devices[kind]
    certs = [d.cert for d in _others(devices, kind)] + [me.cert]
    env = envelope.encrypt(crypt_bundle.sigdata, certs, use_ski=use_ski)
    enc = write_bundle(tmp_path / "enc.raucb", crypt_bundle.payload, env)
    info = run(rauc_bin, "info", "--keyring", crypt_bundle.keyring, "--key", me.key_path, enc)
    assert "[encrypted CMS]" in info.stdout
    assert "Compatible: \t'Test'" in info.stdout
    out = tmp_path / "out"
    run(rauc_bin, "extract", "--keyring", crypt_bundle.keyring, "--key", me.key_path, enc, out)
    assert (out / "rootfs.img").read_bytes() == crypt_bundle.images["rootfs"]
    # a key that is no recipient is refused by rauc
    bad = run(rauc_bin, "info", "--keyring", crypt_bundle.keyring, "--key", devices["p521"].key_path, enc,
              check=False)
    assert bad.returncode != 0
    assert "Failed to decrypt CMS EnvelopedData" in bad.stderr


@pytest.mark.parametrize("use_ski", [False, True], ids=["issuer-serial", "ski"])
@pytest.mark.parametrize("kind", [*KINDS, "p521"])
def test_openssl_decrypts_pyrauc(kind: str, use_ski: bool, tmp_path: Path, devices: dict[str, Issued],
                                 openssl_bin: str) -> None:
    content = bytes(range(256)) * 7 + b"tail"
    certs = [d.cert for d in devices.values()]
    der = tmp_path / "env.der"
    der.write_bytes(envelope.encrypt(content, certs, use_ski=use_ski))
    me = devices[kind]
    out = tmp_path / "out"
    run(openssl_bin, "cms", "-decrypt", "-inform", "DER", "-in", der, "-inkey", me.key_path, "-binary",
        "-out", out)
    assert out.read_bytes() == content
    out.unlink()
    run(openssl_bin, "cms", "-decrypt", "-inform", "DER", "-in", der, "-inkey", me.key_path,
        "-recip", me.cert_path, "-binary", "-out", out)
    assert out.read_bytes() == content
    text = run(openssl_bin, "cms", "-cmsout", "-print", "-inform", "DER", "-in", der).stdout
    assert "parameter: <ABSENT>" in text      # originator key algorithm without parameters


@pytest.mark.parametrize("use_ski", [False, True], ids=["issuer-serial", "ski"])
def test_pyrauc_decrypts_openssl(use_ski: bool, tmp_path: Path, devices: dict[str, Issued],
                                 openssl_bin: str) -> None:
    content = b"\x30\x05" + b"hello" + bytes(100)
    src = tmp_path / "in.bin"
    src.write_bytes(content)
    der = tmp_path / "env.der"
    extra = ["-keyid"] if use_ski else []
    run(openssl_bin, "cms", "-encrypt", "-aes256", "-binary", "-outform", "DER", *extra, "-in", src,
        "-out", der, *[d.cert_path for d in devices.values()])
    data = der.read_bytes()
    for dev in devices.values():
        assert envelope.decrypt(data, dev.key) == content
        assert envelope.decrypt(data, dev.key, dev.cert) == content


def test_openssl_and_pyrauc_structures_match(tmp_path: Path, devices: dict[str, Issued],
                                             openssl_bin: str) -> None:
    """Same shape as OpenSSL's: compare ``openssl cms -cmsout -print`` with random parts blanked."""
    certs = [devices["rsa2048"].cert, devices["p256"].cert]
    src = tmp_path / "in.bin"
    src.write_bytes(b"x" * 100)
    ref = tmp_path / "ref.der"
    run(openssl_bin, "cms", "-encrypt", "-aes256", "-binary", "-outform", "DER", "-in", src, "-out", ref,
        devices["rsa2048"].cert_path, devices["p256"].cert_path)
    mine = tmp_path / "mine.der"
    mine.write_bytes(envelope.encrypt(b"x" * 100, certs))

    def shape(path: Path) -> str:
        text = run(openssl_bin, "cms", "-cmsout", "-print", "-inform", "DER", "-in", path).stdout
        return "\n".join(line for line in text.splitlines() if not re.match(r"^\s+[0-9a-f]{4} - ", line))

    assert shape(mine) == shape(ref)
    # and the byte length of everything but the random parts is the same
    assert len(mine.read_bytes()) == len(ref.read_bytes())


SERIALS = [1, 4242, 2**31, 2**64 + 1, 2**127 - 1, 2**127, 2**128, 2**130 + 7,
           0x0CE86C3E8322969C2D86CDFBE0D4D5914E4EF70C]


def test_recipient_certificate_serial_formats(tmp_path: Path, crypt_bundle: CryptBundle, rauc_bin: str) -> None:
    """Serials below 128 bits print in decimal, larger ones as 0x-hex - exactly as rauc prints them."""
    d = tmp_path / "serials"
    devs = [issue(d, f"s{i}", key_kind="p256" if i % 2 else "rsa2048", serial=s) for i, s in enumerate(SERIALS)]
    env = envelope.encrypt(crypt_bundle.sigdata, [x.cert for x in devs])
    path = write_bundle(tmp_path / "s.raucb", crypt_bundle.payload, env)
    res = run(rauc_bin, "info", "--keyring", crypt_bundle.keyring, "--key", devs[0].key_path,
              "--dump-recipients", path)
    assert envelope.format_recipients(env) + "\n" in res.stdout
    assert "Serial:    170141183460469231731687303715884105727\n" in res.stdout
    assert "Serial:    0x80000000000000000000000000000000\n" in res.stdout


def test_certificates_are_loaded_like_rauc(devices: dict[str, Issued]) -> None:
    """Sanity: the device certs really carry SKIs (use_ski tests depend on it)."""
    for dev in devices.values():
        assert dev.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)


def test_reencrypted_bundle_read_by_rauc(tmp_path: Path, crypt_bundle: CryptBundle, devices: dict[str, Issued],
                                         rauc_bin: str) -> None:
    """Re-encrypting new content for the recipients of a rauc-made envelope (pyrauc resign)."""
    to = write_pem_bundle(tmp_path / "to.pem", [devices["rsa2048"].cert, devices["p384"].cert])
    enc = tmp_path / "enc.raucb"
    run(rauc_bin, "encrypt", "--to", to, "--keyring", crypt_bundle.keyring, crypt_bundle.path, enc)
    payload, cms = split_bundle(enc)
    opened = envelope.open_envelope(cms, devices["rsa2048"].key)
    again = write_bundle(tmp_path / "again.raucb", payload, envelope.reencrypt(cms, opened, opened.content))
    info = run(rauc_bin, "info", "--keyring", crypt_bundle.keyring, "--key", devices["p384"].key_path, again)
    assert "[encrypted CMS]" in info.stdout


# --- EC layouts: one ephemeral key per curve ---------------------------------------------------

@pytest.mark.parametrize("use_ski", [False, True], ids=["issuer-serial", "ski"])
def test_shared_key_layout_decrypted_by_every_tool(use_ski: bool, tmp_path: Path, crypt_bundle: CryptBundle,
                                                   devices: dict[str, Issued], rauc_bin: str,
                                                   openssl_bin: str) -> None:
    """EcLayout.SHARED_KEY: rauc 1.8, ``openssl cms -decrypt`` and pyrauc decrypt it as every
    recipient (two P-256 recipients share the originator key), with and without the recipient's
    certificate; ``--dump-recipients`` lists every recipient, as pyrauc does."""
    certs = [d.cert for d in devices.values()]
    env = envelope.encrypt(crypt_bundle.sigdata, certs, use_ski=use_ski, ec_layout=envelope.EcLayout.SHARED_KEY)
    enc = write_bundle(tmp_path / "enc.raucb", crypt_bundle.payload, env)
    der = tmp_path / "env.der"
    der.write_bytes(env)
    for name, dev in devices.items():
        info = run(rauc_bin, "info", "--keyring", crypt_bundle.keyring, "--key", dev.key_path, enc)
        assert "[encrypted CMS]" in info.stdout, name
        for recip in ([], ["-recip", dev.cert_path]):
            out = tmp_path / f"{name}.out"
            run(openssl_bin, "cms", "-decrypt", "-inform", "DER", "-in", der, "-inkey", dev.key_path, *recip,
                "-binary", "-out", out)
            assert out.read_bytes() == crypt_bundle.sigdata, (name, recip)
        assert envelope.decrypt(env, dev.key) == crypt_bundle.sigdata
        assert envelope.decrypt(env, dev.key, dev.cert) == crypt_bundle.sigdata
    # rauc 1.8 with the recipient's certificate (system.conf [encryption] cert=): the second P-256
    other = devices["other"]
    conf = tmp_path / "system.conf"
    conf.write_text(f"[system]\ncompatible=Test\nbootloader=noop\ndata-directory={tmp_path}/data\n\n"
                    f"[keyring]\npath={crypt_bundle.keyring}\n\n"
                    f"[encryption]\nkey={other.key_path}\ncert={other.cert_path}\n\n"
                    "[slot.rootfs.0]\ndevice=/dev/null\n")
    assert "[encrypted CMS]" in run(rauc_bin, "-c", conf, "info", enc).stdout
    out = tmp_path / "out"
    run(rauc_bin, "extract", "--keyring", crypt_bundle.keyring, "--key", other.key_path, enc, out)
    assert (out / "rootfs.img").read_bytes() == crypt_bundle.images["rootfs"]
    res = run(rauc_bin, "info", "--keyring", crypt_bundle.keyring, "--key", other.key_path, "--dump-recipients", enc)
    start = res.stdout.index(f"{len(certs)} Recipients:")
    assert res.stdout[start:res.stdout.index("Certificate Chain:")] == envelope.format_recipients(env) + "\n"


def _one_kari(der: bytes) -> bytes:
    """``der`` (EcLayout.SHARED_KEY, one curve) with its karis merged into ONE kari that holds a
    RecipientEncryptedKey per recipient (valid CMS, RFC 5652 6.2.2)."""
    info = acms.ContentInfo.load(der)
    enveloped = info["content"]
    karis = [ri.chosen for ri in enveloped["recipient_infos"] if ri.name == "kari"]
    assert len({k["originator"].dump() for k in karis}) == 1
    merged = acms.KeyAgreeRecipientInfo({
        "version": 3, "originator": karis[0]["originator"].copy(),
        "key_encryption_algorithm": karis[0]["key_encryption_algorithm"].copy(),
        "recipient_encrypted_keys": [k["recipient_encrypted_keys"][0].copy() for k in karis]})
    new = acms.EnvelopedData({"version": enveloped["version"].native,
                              "recipient_infos": [acms.RecipientInfo(name="kari", value=merged)],
                              "encrypted_content_info": enveloped["encrypted_content_info"].copy()})
    return acms.ContentInfo({"content_type": "enveloped_data", "content": new}).dump()


def test_one_kari_for_several_recipients_needs_their_certificates(tmp_path: Path, crypt_bundle: CryptBundle,
                                                                  devices: dict[str, Issued], rauc_bin: str,
                                                                  openssl_bin: str) -> None:
    """Why there is no layout with several RecipientEncryptedKeys in one kari (the smallest
    envelope): without the recipient's certificate OpenSSL, and so rauc 1.8 (``info --key``, an
    install without [encryption] cert=), tries only the first one of each kari. pyrauc reads it."""
    first, second = devices["p256"], devices["other"]
    env = _one_kari(envelope.encrypt(crypt_bundle.sigdata, [first.cert, second.cert],
                                     ec_layout=envelope.EcLayout.SHARED_KEY))
    der = tmp_path / "env.der"
    der.write_bytes(env)
    enc = write_bundle(tmp_path / "enc.raucb", crypt_bundle.payload, env)
    reks = acms.ContentInfo.load(env)["content"]["recipient_infos"][0].chosen["recipient_encrypted_keys"]
    first_rid = reks[0]["rid"].chosen
    me, other = (first, second) if first_rid["serial_number"].native == first.cert.serial_number else (second, first)
    for dev in (me, other):
        assert envelope.decrypt(env, dev.key) == crypt_bundle.sigdata
        run(openssl_bin, "cms", "-decrypt", "-inform", "DER", "-in", der, "-inkey", dev.key_path,
            "-recip", dev.cert_path, "-binary", "-out", tmp_path / "with-cert.out")
    run(openssl_bin, "cms", "-decrypt", "-inform", "DER", "-in", der, "-inkey", me.key_path, "-binary",
        "-out", tmp_path / "ok.out")
    refused = run(openssl_bin, "cms", "-decrypt", "-inform", "DER", "-in", der, "-inkey", other.key_path,
                  "-binary", "-out", tmp_path / "no.out", check=False)
    assert refused.returncode != 0
    bad = run(rauc_bin, "info", "--keyring", crypt_bundle.keyring, "--key", other.key_path, enc, check=False)
    assert bad.returncode != 0 and "Failed to decrypt CMS EnvelopedData" in bad.stderr
