"""Fixtures and seed corpora for the fuzz targets, made fresh by pyrauc and the test PKI.

:func:`write_fixtures` issues a small PKI (root CA, intermediate, RSA and EC signers, RSA and EC
device keys) into a directory; :func:`seeds` returns valid inputs for every target: key files,
manifests of every format, system.conf files using every group, central and per-slot status files,
CMS SignedData (inline, detached, two signers, BER-encoded content), EnvelopedData (RSA and EC
recipients, by issuer and serial or by key identifier) and whole bundles. Nothing here is
committed as a blob: every run makes its own.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from pathlib import Path

from benchmarks.fuzz.targets import Fixtures
from pyrauc import bundle, envelope, keys, signature
from pyrauc.config import parse_config
from pyrauc.keyfile import KeyFile
from pyrauc.manifest import Image, Manifest
from pyrauc.status import SlotStatus
from tests.helpers.hostile import nested_econtent
from tests.helpers.pki import Issued, issue, write_pem_bundle

Seeds = dict[str, list[bytes]]


def write_fixtures(directory: Path) -> Fixtures:
    """The PKI and files the targets need, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    root = issue(directory, "fuzz-root", ca=True)
    inter = issue(directory, "fuzz-intermediate", issuer=root, ca=True, key_kind="p256")
    issue(directory, "fuzz-signer", issuer=inter)
    issue(directory, "fuzz-signer-ec", issuer=inter, key_kind="p256")
    fixtures = Fixtures(directory)
    for kind, key_kind in (("rsa", "rsa1024"), ("ec", "p256")):
        device = issue(directory, f"fuzz-device-{kind}", key_kind=key_kind)
        shutil.copyfile(device.key_path, fixtures.key(kind))
        shutil.copyfile(device.cert_path, fixtures.cert(kind))
    write_pem_bundle(fixtures.keyring, [root.cert])
    fixtures.payload.write_bytes(bytes(range(256)) * 32)
    return fixtures


def _loaded(fixtures: Fixtures, name: str) -> Issued:
    directory = fixtures.directory
    key_path, cert_path = directory / f"{name}.key.pem", directory / f"{name}.cert.pem"
    return Issued(keys.load_private_key(str(key_path)), keys.load_cert(str(cert_path)), key_path, cert_path)


# --------------------------------------------------------------------------------------------
# text formats

GLIB_SHOWCASE = (
    "# a comment\n"
    "\n"
    "[group one]\n"
    "  key = value with trailing space \n"
    "list=a;b\\;c;;\n"
    "escapes=\\s\\t\\n\\r\\\\x\n"
    "int= -2147483648\n"
    "uint=18446744073709551615\n"
    "bool=true\n"
    "name[de]=Name\n"
    "name[C]=name\n"
    "dup=1\r\n"
    "dup=2\n"
    "\n"
    "[group one]\n"
    "merged=yes\n"
)


def manifests() -> list[Manifest]:
    """Manifests of every format and role (input, internal, external)."""
    digest = "ab" * 32
    images = [
        Image("rootfs", filename="rootfs.ext4", hooks=["pre-install", "post-install"]),
        Image("appfs", variant="board-a", filename="appfs.img", type="raw", adaptive=["block-hash-index"]),
        Image("data", type="emptyfs"),
        Image("bootloader", hooks=["install"]),
    ]
    plain = Manifest("Test Board", version="2024.09.1-rc1", description="d\\escription; with ;",
                     build="20240906", bundle_format="plain", format_explicit=True, images=images,
                     hook_name="hook.sh", hooks=["install-check"], handler_name="handler.sh",
                     handler_args="--foo 'bar baz'", meta={"custom": {"key": "value", "other-key": "x"}})
    internal = plain.copy()
    for image in internal.images:
        if image.filename:
            image.sha256, image.size = digest, 196608
    verity = Manifest("Test", version="1", bundle_format="verity", format_explicit=True,
                      verity_hash=digest, verity_salt="cd" * 32, verity_size=4096,
                      images=[Image("rootfs", filename="rootfs.img", sha256=digest, size=4096),
                              Image("files", artifact="app", filename="app.tar", convert=["tar-extract"],
                                    converted=["app.tar.extracted"])])
    crypt = Manifest("Test", bundle_format="crypt", format_explicit=True, verity_hash=digest,
                     verity_salt="ef" * 16, verity_size=8192, crypt_key=bytes(range(32)),
                     min_rauc_version="1.14",
                     images=[Image("rootfs", filename="rootfs.squashfs-xz", sha256=digest, size=1)])
    return [Manifest("Test"), plain, internal, verity, crypt]


CONFIGS = (
    "[system]\ncompatible=Test Board\nbootloader=efi\nefi-use-bootnext=false\nmountprefix=/mnt/rauc\n"
    "data-directory=/data/rauc\nbundle-formats=-plain +crypt\nmax-bundle-download-size=8M\n"
    "max-bundle-signature-size=1M\nmin-bundle-version=1.2.3-rc1\nactivate-installed=true\n"
    "perform-pre-check=true\nprevent-late-fallback=false\nvariant-name=board-a\n\n"
    "[keyring]\npath=ca.pem\ndirectory=certs\ncheck-crl=true\nallow-partial-chain=false\n"
    "use-bundle-signing-time=true\nallowed-signer-cns=signer;other\ncheck-purpose=codesign\n\n"
    "[encryption]\nkey=pkcs11:token=t;object=o\ncert=device.pem\n\n"
    "[handlers]\nsystem-info=/usr/lib/rauc/info\npre-install=pre.sh\npost-install=post.sh\n\n"
    "[streaming]\nsandbox-user=nobody\nsend-headers=boot-id;machine-id\n\n"
    "[casync]\nstorepath=/store\nuse-desync=true\n\n[autoinstall]\npath=/data/auto.raucb\n\n"
    "[polling]\nurl=https://example.invalid/\ninterval-sec=60\n\n"
    "[log.install]\nfilename=install.log\nevents=install;boot\nformat=json\nmax-size=1M\nmax-files=5\n\n"
    "[artifacts.apps]\npath=/data/apps\ntype=trees\ndescription=Apps\nparent-class=rootfs\n\n"
    "[slot.rootfs.0]\ndevice=/dev/vda2\ntype=ext4\nbootname=A\nresize=true\nextra-mkfs-opts=-O ^has_journal\n"
    "extra-mount-opts=noatime\n\n"
    "[slot.rootfs.1]\ndevice=PARTLABEL=rootfs-b\ntype=ext4\nbootname=B\ninstall-same=false\n"
    "efi-loader=\\\\EFI\\\\Linux\\\\b.efi\nefi-cmdline=root=/dev/vda3\n\n"
    "[slot.appfs.0]\ndevice=./appfs-a.img\nparent=rootfs.0\nreadonly=true\nallow-mounted=true\n\n"
    "[slot.appfs.1]\ndevice=../appfs-b.img\nparent=rootfs.1\nforce-install-same=true\n",
    "[system]\ncompatible=uboot\nbootloader=uboot\nboot-attempts=3\nboot-attempts-primary=5\n"
    "statusfile=per-slot\n\n"
    "[slot.boot.0]\ndevice=/dev/mmcblk0\ntype=boot-emmc\nsize-limit=4M\n\n"
    "[slot.bootloader.0]\ndevice=/dev/sda\ntype=boot-gpt-switch\nregion-start=1M\nregion-size=32M\n\n"
    "[slot.kernel.0]\ndevice=/dev/mtd0\ntype=jffs2\nignore-checksum=true\n",
    "[system]\ncompatible=g\nbootloader=grub\ngrubenv=grubenv\nstatusfile=/var/lib/rauc.status\n"
    "variant-file=/etc/variant\n\n[slot.rootfs.0]\ndevice=/dev/sda1\nbootname=system0\n",
    "[system]\ncompatible=b\nbootloader=barebox\nbarebox-statename=state\nbarebox-dtbpath=/dtb\n"
    "variant-dtb=true\n\n[slot.rootfs.0]\ndevice=/dev/ubi0_0\ntype=ubifs\nbootname=system0\n",
    "[system]\ncompatible=c\nbootloader=custom\n\n[handlers]\nbootloader-custom-backend=backend.sh\n",
)


def status_files() -> list[str]:
    """A central status file (two slots and [system]) and a per-slot one."""
    st = SlotStatus(bundle_compatible="Test", bundle_version="1.0", bundle_description="d", bundle_build="b",
                    bundle_hash="ab" * 32, status="ok", checksum_sha256="cd" * 32, checksum_size=4096,
                    installed_transaction="4b4b0e5e-1111-2222-3333-444455556666",
                    installed_timestamp="2024-09-06T09:51:13Z", installed_count=2,
                    activated_timestamp="2024-09-06T09:52:13Z", activated_count=1, extra={"x.unknown": "1"})
    central = KeyFile()
    st.to_keyfile(central, "slot.rootfs.0")
    SlotStatus(status="failed").to_keyfile(central, "slot.rootfs.1")
    central.set_string("system", "boot-id", "0b1f4a3e-5c2d-4f1e-9a8b-7c6d5e4f3a2b")
    per_slot = KeyFile()
    st.to_keyfile(per_slot, "slot")
    return [central.to_data(), per_slot.to_data()]


# --------------------------------------------------------------------------------------------
# CMS, envelopes and bundles


def _frame(payload: bytes, cms: bytes) -> bytes:
    return payload + cms + len(cms).to_bytes(8, "big")


def _real_bundles(fixtures: Fixtures, signer: Issued, work: Path) -> list[bytes]:
    """Bundles made by pyrauc's ``bundle`` and ``encrypt`` (needs mksquashfs)."""
    if shutil.which("mksquashfs") is None:
        return []
    logging.getLogger("pyrauc").setLevel(logging.ERROR)
    made: list[bytes] = []
    for fmt in ("plain", "verity", "crypt"):
        content = work / f"content-{fmt}"
        content.mkdir()
        (content / "rootfs.img").write_bytes(b"".join(hashlib.sha256(bytes([i])).digest() for i in range(160)))
        (content / "manifest.raucm").write_text(
            f"[update]\ncompatible=Test\nversion=1\n\n[bundle]\nformat={fmt}\n\n[image.rootfs]\nfilename=rootfs.img\n")
        out = work / f"{fmt}.raucb"
        bundle.create_bundle(content, out, cert=str(signer.cert_path), key=str(signer.key_path))
        made.append(out.read_bytes())
    opened = bundle.open_bundle(work / "crypt.raucb", keyring=None, verify=False)
    recipients = [keys.load_cert(str(fixtures.cert("rsa"))), keys.load_cert(str(fixtures.cert("ec")))]
    bundle.encrypt_bundle(opened, work / "encrypted.raucb", recipients)
    made.append((work / "encrypted.raucb").read_bytes())
    return made


def seeds(fixtures: Fixtures) -> Seeds:
    """Valid inputs for every target."""
    signer = _loaded(fixtures, "fuzz-signer")
    signer_ec = _loaded(fixtures, "fuzz-signer-ec")
    inter = keys.load_cert(str(fixtures.directory / "fuzz-intermediate.cert.pem"))
    mfs = [m.to_data() for m in manifests()]
    configs = [c.encode() for c in CONFIGS]
    statuses = [s.encode() for s in status_files()]
    for text in configs:
        parse_config(text, fixtures.directory / "system.conf")     # the seeds themselves are valid

    external = mfs[3]
    inline = signature.cms_sign(external, cert=signer.cert, key=signer.key, intermediates=[inter])
    inline_ec = signature.cms_sign(mfs[4], cert=signer_ec.cert, key=signer_ec.key, intermediates=[inter])
    detached = signature.cms_sign(None, cert=signer.cert, key=signer.key, intermediates=[inter],
                                  detached_path=fixtures.payload)
    two_signers = signature.cms_add_signer(inline, cert=signer_ec.cert, key=signer_ec.key)
    cmss = [inline, inline_ec, detached, two_signers, nested_econtent(inline, 100)]

    recipients = [keys.load_cert(str(fixtures.cert(kind))) for kind in ("rsa", "ec")]
    envelopes = [envelope.encrypt(inline_ec, recipients), envelope.encrypt(inline_ec, recipients, use_ski=True),
                 envelope.encrypt(b"not DER", recipients[1:])]

    payload = fixtures.payload.read_bytes()[:4096] + b"\0"
    bundles = [_frame(payload + bytes(4095), inline), _frame(payload * 2, inline_ec),
               _frame(payload * 2, envelopes[0]), _frame(fixtures.payload.read_bytes(), detached)]
    with tempfile.TemporaryDirectory(prefix="pyrauc-fuzz-seeds-") as work:
        bundles += _real_bundles(fixtures, signer, Path(work))

    return {
        "keyfile": [GLIB_SHOWCASE.encode(), *mfs, *configs, *statuses],
        "manifest": mfs,
        "config": configs,
        "status": statuses,
        "cms": cmss,
        "envelope": envelopes,
        "bundle": bundles,
    }


def write_seeds(corpus: Path, target_seeds: list[bytes]) -> None:
    """Write seeds into a corpus directory, named by content (as libFuzzer names its units)."""
    corpus.mkdir(parents=True, exist_ok=True)
    for data in target_seeds:
        (corpus / f"seed-{hashlib.sha1(data).hexdigest()}").write_bytes(data)
