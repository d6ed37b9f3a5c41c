"""The fuzz targets: one function of untrusted bytes per parser, and the errors it may raise.

Each target feeds the input to a parser and then to what pyrauc does next with the result (getters,
checks, serialisation, ``rauc info`` text), so every path that handles attacker-controlled values
runs. A step that fails with an allowed error does not stop the later, independent steps.

Import this module only under atheris' instrumentation (see :mod:`benchmarks.fuzz.worker`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyrauc import bundle, envelope, info, keys, signature, slots, status
from pyrauc.certformat import dump_cert, format_cert_chain, format_name
from pyrauc.config import SystemConfig, parse_config
from pyrauc.errors import (
    ConfigError,
    EnvelopeError,
    KeyFileError,
    ManifestError,
    RaucError,
    SignatureError,
)
from pyrauc.keyfile import KeyFile
from pyrauc.manifest import Manifest
from pyrauc.signature import Keyring


@dataclass(frozen=True)
class Fixtures:
    """Keys, certificates and files the targets use; made by :func:`benchmarks.fuzz.seeds.write_fixtures`."""

    directory: Path

    @property
    def keyring(self) -> Path:
        return self.directory / "keyring.pem"

    @property
    def payload(self) -> Path:
        """The file detached signatures of the CMS seeds cover."""
        return self.directory / "payload.bin"

    def key(self, kind: str) -> Path:
        """``rsa`` or ``ec`` device key (recipient of the envelope seeds)."""
        return self.directory / f"device-{kind}.key"

    def cert(self, kind: str) -> Path:
        return self.directory / f"device-{kind}.pem"


@dataclass(frozen=True)
class Target:
    """One fuzz target: ``run(data)`` may raise only ``allowed`` (one-line messages)."""

    name: str
    run: Callable[[bytes], None]
    allowed: tuple[type[RaucError], ...]


def attempt(allowed: tuple[type[RaucError], ...], func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``func(*args, **kwargs)``, or None when it raised one of the ``allowed`` errors.

    Anything else propagates: a crash. So does an allowed error without a message. (A message may
    echo a hostile value with a newline in it, as RAUC's do: that is not counted.)
    """
    try:
        return func(*args, **kwargs)
    except allowed as exc:
        if not str(exc).strip():
            raise AssertionError(f"{type(exc).__name__} without a message") from exc
        return None


# --------------------------------------------------------------------------------------------
# GKeyFile, manifest, system.conf, status files


def _exercise_keyfile(kf: KeyFile) -> None:
    """Every getter on every key, the consume pattern, and the serialisation."""
    ok = (KeyFileError,)
    for group in kf.groups():
        for key in kf.keys(group):
            for getter in (kf.get_value, kf.get_string, kf.get_string_list, kf.get_boolean,
                           kf.get_integer, kf.get_uint64):
                attempt(ok, getter, group, key)
    text = kf.to_data()
    for group in kf.groups():
        for key in list(dict.fromkeys(kf.keys(group))):
            for consume in (kf.consume_uint64, kf.consume_integer, kf.consume_boolean,
                            kf.consume_string_list, kf.consume_string):
                if attempt(ok, consume, group, key) is not None:
                    break
        attempt(ok, kf.ensure_group_consumed, group)
    attempt(ok, kf.ensure_consumed)
    attempt(ok, KeyFile.parse, text)


def fuzz_keyfile(data: bytes) -> None:
    _exercise_keyfile(KeyFile.parse(data))


def fuzz_manifest(data: bytes) -> None:
    mf = Manifest.parse(data)
    ok = (ManifestError,)
    for check in ("check_input", "check_internal", "check_external"):
        attempt(ok, getattr(mf.copy(), check))
    for image in mf.images:
        attempt(ok, getattr, image, "effective_type")
    repr(mf)
    mf.hash()
    json.dumps(info.to_json_obj(mf))
    info.json_glib_pretty(info.to_dict(mf))
    mf.raw = None
    attempt((ManifestError, KeyFileError), lambda: Manifest.parse(mf.to_data()))


def make_config(scratch: Path) -> Callable[[bytes], None]:
    conf = scratch / "system.conf"

    def fuzz_config(data: bytes) -> None:
        config = parse_config(data, conf)
        config.to_keyring()
        built = slots.build_slots(config)
        for slot in built.values():
            slot.root  # noqa: B018 - walks the parents: must end
        bootname = next((s.bootname for s in built.values() if s.bootname is not None), None)
        if bootname is not None and attempt((slots.SlotError,), slots.determine_slot_states, built, bootname):
            attempt((slots.SlotError,), slots.determine_target_group, built)
    return fuzz_config


def make_status(scratch: Path) -> Callable[[bytes], None]:
    central = parse_config("[system]\ncompatible=fuzz\nbootloader=noop\ndata-directory=data\n"
                           "[slot.rootfs.0]\ndevice=/dev/null\ntype=ext4\n"
                           "[slot.rootfs.1]\ndevice=/dev/zero\ntype=ext4\n", scratch / "system.conf")
    per_slot = parse_config("[system]\ncompatible=fuzz\nbootloader=noop\n"
                            "[slot.rootfs.0]\ndevice=/dev/null\ntype=ext4\n", scratch / "system.conf")
    mnt = scratch / "slot"
    mnt.mkdir(exist_ok=True)
    Path(central.statusfile).parent.mkdir(parents=True, exist_ok=True)
    central_slots = slots.build_slots(central)
    slot = slots.build_slots(per_slot)["rootfs.0"]
    slot.mount_point = str(mnt)
    ok = (status.StatusError,)

    def load(config: SystemConfig, target: slots.Slot, group: str) -> None:
        st = attempt(ok, status.load_slot_status, config, target)
        if st is not None:
            kf = KeyFile()
            st.to_keyfile(kf, group)
            KeyFile.parse(kf.to_data())

    def fuzz_status(data: bytes) -> None:
        Path(central.statusfile).write_bytes(data)
        for target in central_slots.values():
            load(central, target, f"slot.{target.name}")
        attempt(ok, status.load_system_status, central)
        (mnt / status.PER_SLOT_FILENAME).write_bytes(data)
        load(per_slot, slot, "slot")
    return fuzz_status


# --------------------------------------------------------------------------------------------
# CMS SignedData, EnvelopedData, bundle framing


def make_cms(fixtures: Fixtures) -> Callable[[bytes], None]:
    keyring = Keyring(path=fixtures.keyring)
    ok = (SignatureError,)

    def fuzz_cms(data: bytes) -> None:
        attempt(ok, signature.cms_type, data)
        content = attempt(ok, signature.cms_content, data)
        for cert in attempt(ok, signature.cms_certificates, data) or []:
            keys.certificate_problem(cert)
            dump_cert(cert)
            format_name(cert.subject)
        if content is None:
            verified = attempt(ok, signature.cms_verify, data, keyring, detached_path=fixtures.payload)
        else:
            verified = attempt(ok, signature.cms_verify, data, keyring)
        if verified is not None:
            format_cert_chain(verified.chain)
            signature.expiry_warnings(verified.chain)
    return fuzz_cms


def make_envelope(fixtures: Fixtures) -> Callable[[bytes], None]:
    recipients = [(keys.load_private_key(str(fixtures.key(kind))), keys.load_cert(str(fixtures.cert(kind))))
                  for kind in ("ec", "rsa")]
    ok = (EnvelopeError,)

    def fuzz_envelope(data: bytes) -> None:
        attempt(ok, envelope.format_recipients, data)
        for key, cert in recipients:
            attempt(ok, envelope.decrypt, data, key)
            attempt(ok, envelope.decrypt, data, key, cert)
    return fuzz_envelope


def make_bundle(fixtures: Fixtures, scratch: Path) -> Callable[[bytes], None]:
    path = scratch / "fuzz.raucb"
    keyring = Keyring(path=fixtures.keyring)
    key = str(fixtures.key("ec"))
    ok = (RaucError,)

    def show(opened: bundle.Bundle | None) -> None:
        if opened is None:
            return
        repr(opened)
        for fmt in info.OUTPUT_FORMATS:
            info.format_info(opened, fmt, dump_cert=True, dump_recipients=opened.encrypted)

    def fuzz_bundle(data: bytes) -> None:
        path.write_bytes(data)
        framing = attempt(ok, bundle.read_framing, path)
        if framing is None:
            return
        show(attempt(ok, bundle.open_bundle, path, keyring=keyring, key=key))
        # unverified (rauc info --no-verify), but never unsquashfs per input: only inline manifests
        cms = framing[1]
        kind = attempt(ok, signature.cms_type, cms)
        if kind == "envelopedData" or (kind == "signedData" and attempt(ok, signature.cms_content, cms)):
            show(attempt(ok, bundle.open_bundle, path, keyring=None, verify=False, key=key))
    return fuzz_bundle


#: name -> factory(fixtures, scratch); ``scratch`` is a private directory for the files a target writes
FACTORIES: dict[str, Callable[[Fixtures, Path], Target]] = {
    "keyfile": lambda fixtures, scratch: Target("keyfile", fuzz_keyfile, (KeyFileError,)),
    "manifest": lambda fixtures, scratch: Target("manifest", fuzz_manifest, (ManifestError,)),
    "config": lambda fixtures, scratch: Target("config", make_config(scratch), (ConfigError,)),
    "status": lambda fixtures, scratch: Target("status", make_status(scratch), (status.StatusError,)),
    "cms": lambda fixtures, scratch: Target("cms", make_cms(fixtures), (SignatureError,)),
    "envelope": lambda fixtures, scratch: Target("envelope", make_envelope(fixtures), (EnvelopeError,)),
    "bundle": lambda fixtures, scratch: Target("bundle", make_bundle(fixtures, scratch), (RaucError,)),
}
