"""``pyrauc encrypt`` and ``info --key`` side by side with Debian's rauc 1.8, for many recipients.

    python -m benchmarks.bench_encrypt [--quick]

Encrypts one small crypt bundle for 1, 100, 1000 and 10000 EC P-256 recipients and for 100 and
1000 RSA-2048 recipients with both tools, then decrypts the rauc-made bundle with ``info --key``
for the LAST recipient, without ``--cert`` (every recipient of the key's type is tried) and with
it (only the matching one). pyrauc runs with ``-C system:max-bundle-signature-size=64M``; rauc 1.8
only where the CMS fits its 64 KiB limit (about 290 EC recipients). ``--quick`` runs only the
small counts (EC 1 and 100, RSA 100).

Recipient certificates are issued by a throw-away P-256 CA; RSA recipients share a pool of keys
(RSA key generation would dominate the set-up), except the last one, whose key is unique so that
"without --cert" really has to walk the whole list. Prints wall time, peak RSS and the ratios
pyrauc / rauc (lower is better for pyrauc); never asserts on timing.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from benchmarks import common
from benchmarks.common import Measurement, pyrauc_cmd, report
from tests.helpers.pki import FAR_AHEAD, LONG_AGO, _name, make_pki

RAUC_MAX_SIG = 64 * 1024
PYRAUC_CONF = ["-C", "system:max-bundle-signature-size=64M"]
FULL = [("p256", 1), ("p256", 100), ("p256", 1000), ("p256", 10000), ("rsa2048", 100), ("rsa2048", 1000)]
QUICK = [("p256", 1), ("p256", 100), ("rsa2048", 100)]
RSA_POOL = 8


@dataclass
class Recipients:
    pem: Path           # all certificates, the measured recipient last
    key: Path           # private key of the last recipient
    cert: Path          # certificate of the last recipient


def _recipients(directory: Path, kind: str, count: int) -> Recipients:
    """``count`` recipient certificates under a fresh CA; key and cert of the last one written apart."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("bench recipient CA")
    pool = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(RSA_POOL)] \
        if kind.startswith("rsa") else []
    pems: list[bytes] = []
    last_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None
    last_cert = b""
    for i in range(count):
        last = i == count - 1
        if kind.startswith("rsa"):
            key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
                rsa.generate_private_key(public_exponent=65537, key_size=2048) if last else pool[i % RSA_POOL])
        else:
            key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(_name(f"device {i:05d}")).issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(i + 1).not_valid_before(LONG_AGO)
                .not_valid_after(FAR_AHEAD)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        pem = cert.public_bytes(serialization.Encoding.PEM)
        pems.append(pem)
        if last:
            last_key, last_cert = key, pem
    assert last_key is not None
    directory.mkdir(parents=True, exist_ok=True)
    result = Recipients(directory / "to.pem", directory / "last.key.pem", directory / "last.cert.pem")
    result.pem.write_bytes(b"".join(pems))
    result.key.write_bytes(last_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    result.cert.write_bytes(last_cert)
    return result


measure = common.measure


def _crypt_bundle(w: Path, rauc: str, cert: Path, key: Path) -> Path:
    content = w / "content"
    content.mkdir()
    (content / "rootfs.img").write_bytes(bytes(range(256)) * 4096)      # 1 MiB
    (content / "manifest.raucm").write_text(
        "[update]\ncompatible=bench\nversion=1\n\n[bundle]\nformat=crypt\n\n[image.rootfs]\nfilename=rootfs.img\n")
    out = w / "crypt.raucb"
    measure([rauc, "bundle", "--cert", str(cert), "--key", str(key), str(content), str(out)])
    return out


def _cms_size(path: Path) -> int:
    with open(path, "rb") as f:
        f.seek(-8, 2)
        return int.from_bytes(f.read(8), "big")


def _single(title: str, ours: Measurement) -> str:
    return (f"{title:<44} pyrauc {ours.seconds:8.2f} s {ours.peak_rss_kib / 1024:8.1f} MiB | "
            f"rauc 1.8 refuses a CMS > 64 KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the small recipient counts")
    args = parser.parse_args()
    rauc = shutil.which("rauc")
    if rauc is None:
        raise SystemExit("Debian's rauc is needed for the comparison (apt-get install rauc)")
    rows: list[tuple[str, Measurement, Measurement | None]] = []
    with tempfile.TemporaryDirectory(prefix="pyrauc-bench-enc-") as tmp:
        w = Path(tmp)
        pki = make_pki(w / "pki")
        plain = _crypt_bundle(w, rauc, pki.signer_direct.cert_path, pki.signer_direct.key_path)
        ring = ["--keyring", str(pki.keyring)]
        for kind, count in (QUICK if args.quick else FULL):
            tag = f"{'EC P-256' if kind == 'p256' else 'RSA-2048'} x{count}"
            rec = _recipients(w / f"rec-{kind}-{count}", kind, count)
            ours_b, theirs_b = w / f"py-{kind}-{count}.raucb", w / f"rauc-{kind}-{count}.raucb"
            m_ours = measure([*pyrauc_cmd(), "encrypt", "--to", str(rec.pem), *ring, str(plain), str(ours_b)])
            m_theirs = measure([rauc, "encrypt", "--to", str(rec.pem), *ring, str(plain), str(theirs_b)])
            size = _cms_size(theirs_b)
            title = f"encrypt {tag} (CMS {size / 1024:.0f} KiB)"
            print(report(title, m_ours, m_theirs), flush=True)
            rows.append((title, m_ours, m_theirs))
            for with_cert in (False, True):
                cert = ["--cert", str(rec.cert)] if with_cert else []
                title = f"info --key {tag} {'+ --cert' if with_cert else 'no --cert'}"
                # both tools read the same (rauc-made) bundle
                m_ours = measure([*pyrauc_cmd(), *PYRAUC_CONF, "info", *ring, "--key", str(rec.key), *cert,
                                  str(theirs_b)])
                if size <= RAUC_MAX_SIG:
                    m_theirs = measure([rauc, "info", *ring, "--key", str(rec.key), *cert, str(theirs_b)])
                    print(report(title, m_ours, m_theirs), flush=True)
                    rows.append((title, m_ours, m_theirs))
                else:
                    print(_single(title, m_ours), flush=True)
                    rows.append((title, m_ours, None))
            for p in (ours_b, theirs_b):
                p.unlink()
    print("\n| case | pyrauc s | rauc s | time x | pyrauc MiB | rauc MiB | mem x |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for title, ours, theirs in rows:
        if theirs is None:
            print(f"| {title} | {ours.seconds:.2f} | - | - | {ours.peak_rss_kib / 1024:.1f} | - | - |")
        else:
            print(f"| {title} | {ours.seconds:.2f} | {theirs.seconds:.2f} | {ours.seconds / theirs.seconds:.2f} "
                  f"| {ours.peak_rss_kib / 1024:.1f} | {theirs.peak_rss_kib / 1024:.1f} "
                  f"| {ours.peak_rss_kib / theirs.peak_rss_kib:.2f} |")


if __name__ == "__main__":
    main()
