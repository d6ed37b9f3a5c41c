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
    sigdata = envelope.decrypt(cms, devices["rsa2048"].key)
    again = write_bundle(tmp_path / "again.raucb", payload, envelope.reencrypt(cms, sigdata, sigdata))
    info = run(rauc_bin, "info", "--keyring", crypt_bundle.keyring, "--key", devices["p384"].key_path, again)
    assert "[encrypted CMS]" in info.stdout
