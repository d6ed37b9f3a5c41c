"""system.conf: RAUC's system configuration (rauc.md section 6).

:func:`load_config` finds the file (explicit path, else the first existing of
``/etc/rauc/system.conf``, ``/run/rauc/system.conf``, ``/usr/lib/rauc/system.conf``), applies
``-C SECTION:KEY=VALUE`` overrides to the key file and parses it strictly like RAUC: unknown keys
and groups are errors, relative paths are resolved against the directory of the file and sizes
accept the suffixes K/M/G/T (powers of 1024).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pyrauc import semver, shellwords
from pyrauc.errors import ConfigError, KeyFileError, RaucError
from pyrauc.keyfile import KeyFile

if TYPE_CHECKING:
    from pyrauc.signature import Keyring

SEARCH_PATHS: tuple[str, ...] = ("/etc/rauc/system.conf", "/run/rauc/system.conf", "/usr/lib/rauc/system.conf")
BOOTLOADERS: tuple[str, ...] = ("barebox", "grub", "uboot", "efi", "custom", "noop")
SLOT_TYPES: tuple[str, ...] = (
    "raw", "ext4", "ubifs", "ubivol", "nand", "nor", "vfat", "jffs2",
    "boot-emmc", "boot-mbr-switch", "boot-gpt-switch", "boot-raw-fallback",
)
MOUNTABLE_TYPES: tuple[str, ...] = ("ext4", "ubifs", "vfat", "jffs2")
BUNDLE_FORMATS: tuple[str, ...] = ("plain", "verity", "crypt")
DEFAULT_MAX_BUNDLE_DOWNLOAD_SIZE = 8 * 1024 * 1024
DEFAULT_MAX_BUNDLE_SIGNATURE_SIZE = 64 * 1024
#: the largest max-bundle-signature-size accepted (an envelope for 100,000 EC recipients is ~25 MiB)
MAX_BUNDLE_SIGNATURE_SIZE_LIMIT = 256 * 1024 * 1024
PER_SLOT = "per-slot"
#: event types and formats of the event log's ``[log.<name>]`` loggers
LOG_EVENT_TYPES: tuple[str, ...] = ("install", "mark", "boot", "service", "writeslot")
LOG_FORMATS: tuple[str, ...] = ("readable", "short", "json", "json-pretty")

_SIZE = re.compile(r"^\s*([0-9]+)\s*([KMGT]?)\s*$")


@dataclass
class SlotConfig:
    """One ``[slot.<class>.<index>]`` group."""

    name: str
    sclass: str
    index: int
    device: str
    type: str = "raw"
    bootname: str | None = None
    parent: str | None = None
    description: str | None = None
    readonly: bool = False
    install_same: bool = True
    allow_mounted: bool = False
    resize: bool = False
    extra_mkfs_opts: list[str] = field(default_factory=list)
    extra_mount_opts: str | None = None
    region_start: int | None = None
    region_size: int | None = None
    size_limit: int | None = None
    efi_loader: str | None = None
    efi_cmdline: str | None = None

    @property
    def mountable(self) -> bool:
        return self.type in MOUNTABLE_TYPES


@dataclass
class KeyringConfig:
    """The ``[keyring]`` group."""

    path: Path | None = None
    directory: Path | None = None
    check_crl: bool = False
    allow_partial_chain: bool = False
    use_bundle_signing_time: bool = False
    allowed_signer_cns: tuple[str, ...] | None = None
    check_purpose: str | None = None

    def to_keyring(self, no_check_time: bool = False) -> Keyring | None:
        """The :class:`pyrauc.signature.Keyring` policy, None if neither path nor directory is set."""
        if self.path is None and self.directory is None:
            return None
        from pyrauc.signature import Keyring

        return Keyring(path=self.path, directory=self.directory, check_crl=self.check_crl,
                       allow_partial_chain=self.allow_partial_chain, check_purpose=self.check_purpose,
                       use_bundle_signing_time=self.use_bundle_signing_time,
                       allowed_signer_cns=self.allowed_signer_cns, no_check_time=no_check_time)


@dataclass
class EncryptionConfig:
    """The ``[encryption]`` group (key/cert are paths or ``pkcs11:`` URIs)."""

    key: str | None = None
    cert: str | None = None


@dataclass
class HandlersConfig:
    """The ``[handlers]`` group (absolute paths)."""

    system_info: str | None = None
    pre_install: str | None = None
    post_install: str | None = None
    bootloader_custom_backend: str | None = None


@dataclass
class LogConfig:
    """One ``[log.<name>]`` group."""

    name: str
    filename: str
    events: list[str] = field(default_factory=lambda: ["all"])
    format: str = "readable"           # one of LOG_FORMATS
    max_size: int | None = None        # rotate before growing past this (bytes); None: never
    max_files: int | None = None       # files kept by the rotation (None: 10)


#: ``[streaming] send-headers`` items (RAUC-* headers on the first request of a stream, see pyrauc.stream)
SEND_HEADERS = ("boot-id", "machine-id", "system-version", "serial", "variant", "transaction-id", "uptime")


@dataclass
class ArtifactRepoConfig:
    """One ``[artifacts.<name>]`` group."""

    name: str
    path: str
    type: str
    description: str | None = None
    parent_class: str | None = None


@dataclass
class SystemConfig:
    """The parsed system.conf."""

    path: Path | None
    compatible: str
    bootloader: str
    mountprefix: str = "/mnt/rauc/"
    data_directory: str | None = None
    statusfile: str = PER_SLOT          # "per-slot" or an absolute path
    bundle_formats: list[str] = field(default_factory=lambda: list(BUNDLE_FORMATS))
    activate_installed: bool = True
    efi_use_bootnext: bool = True
    boot_attempts: int = 3
    boot_attempts_primary: int = 3
    grubenv: str = "/boot/grub/grubenv"
    barebox_statename: str | None = None
    barebox_dtbpath: str | None = None
    variant_name: str | None = None
    variant_file: str | None = None
    variant_dtb: bool = False
    max_bundle_download_size: int = DEFAULT_MAX_BUNDLE_DOWNLOAD_SIZE
    max_bundle_signature_size: int = DEFAULT_MAX_BUNDLE_SIGNATURE_SIZE
    perform_pre_check: bool = False
    prevent_late_fallback: bool = False
    min_bundle_version: str | None = None
    keyring: KeyringConfig = field(default_factory=KeyringConfig)
    encryption: EncryptionConfig = field(default_factory=EncryptionConfig)
    handlers: HandlersConfig = field(default_factory=HandlersConfig)
    streaming: dict[str, str] = field(default_factory=dict)
    casync: dict[str, str] = field(default_factory=dict)
    autoinstall: dict[str, str] = field(default_factory=dict)
    polling: dict[str, str] = field(default_factory=dict)
    logs: dict[str, LogConfig] = field(default_factory=dict)
    artifacts: dict[str, ArtifactRepoConfig] = field(default_factory=dict)
    slots: dict[str, SlotConfig] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)   # informational notes from parsing

    @property
    def central_status(self) -> bool:
        return self.statusfile != PER_SLOT

    def to_keyring(self, no_check_time: bool = False) -> Keyring | None:
        return self.keyring.to_keyring(no_check_time)


# --------------------------------------------------------------------------------------------
# helpers

def parse_size(value: str, key: str = "size") -> int:
    """``1024``, ``4K``, ``8M``, ``1G``, ``2T`` (powers of 1024)."""
    m = _SIZE.match(value)
    if m is None:
        raise ConfigError(f"Invalid size value '{value}' for key '{key}'")
    return int(m.group(1)) * 1024 ** " KMGT".index(m.group(2) or " ")


def parse_override(spec: str) -> tuple[str, str, str]:
    """Split ``SECTION:KEY=VALUE`` (RAUC's ``-C/--confopt``)."""
    prefix = "Error in parsing override: "
    if "=" not in spec:
        raise ConfigError(prefix + "Missing '='")
    lhs, value = spec.split("=", 1)
    if ":" not in lhs:
        raise ConfigError(prefix + "Missing ':'")
    section, key = lhs.split(":", 1)
    if not section or not key:
        raise ConfigError(prefix + "you must specify it in format SECTION:KEY=VALUE")
    return section, key, value


def apply_overrides(kf: KeyFile, overrides: Iterable[str]) -> None:
    for spec in overrides:
        section, key, value = parse_override(spec)
        kf.set_value(section, key, value)


def parse_bundle_formats(value: str) -> list[str]:
    """``plain verity`` (fixed) or ``-plain +crypt`` (relative to the default set)."""
    items = value.split()
    fixed = [i for i in items if not i.startswith(("+", "-"))]
    if fixed and len(fixed) != len(items):
        raise ConfigError(
            f"Invalid bundle format configuration '{value}', cannot combine fixed value with modification (+/-)")
    result: list[str] = [] if fixed else list(BUNDLE_FORMATS)
    for item in items:
        name = item.lstrip("+-") if item[0] in "+-" else item
        if name not in BUNDLE_FORMATS:
            raise ConfigError(f"Invalid bundle format '{name}'")
        if item.startswith("-"):
            if name in result:
                result.remove(name)
        elif name not in result:
            result.append(name)
    result.sort(key=BUNDLE_FORMATS.index)
    if not result:
        raise ConfigError(f"Invalid bundle format configuration '{value}', no remaining formats")
    return result


def _check_parents(slots: dict[str, SlotConfig]) -> None:
    """Refuse a slot that is its own parent or parents forming a loop (they would never reach a root)."""
    for slot in slots.values():
        seen = [slot.name]
        parent = slot.parent
        while parent is not None:
            if parent in seen:
                if parent == slot.name and len(seen) == 1:
                    raise ConfigError(f"Slot '{slot.name}' cannot be its own parent")
                raise ConfigError(f"Parent loop in slot configuration: {' -> '.join([*seen, parent])}")
            seen.append(parent)
            parent = slots[parent].parent


def _check_bootnames(slots: dict[str, SlotConfig]) -> None:
    """Each bootname names one slot: the bootloader could not tell two slots apart otherwise."""
    owner: dict[str, str] = {}
    for slot in slots.values():
        if slot.bootname is None:
            continue
        if slot.bootname in owner:
            raise ConfigError(f"Bootname '{slot.bootname}' is set on more than one slot "
                              f"({owner[slot.bootname]}, {slot.name})")
        owner[slot.bootname] = slot.name


def _resolve(base: Path | None, value: str | None) -> str | None:
    if value is None or value.startswith("pkcs11:") or os.path.isabs(value) or base is None:
        return value
    return os.path.normpath(os.path.join(base, value))


def find_config(path: str | os.PathLike[str] | None = None) -> Path:
    """The explicit path, or the first existing file of :data:`SEARCH_PATHS`."""
    if path is not None:
        return Path(path)
    for candidate in SEARCH_PATHS:
        if os.path.exists(candidate):
            return Path(candidate)
    return Path(SEARCH_PATHS[0])


def load_config(path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()) -> SystemConfig:
    """Load, override and parse system.conf (ConfigError with RAUC's wording on failure)."""
    conf_path = find_config(path)
    try:
        data = conf_path.read_bytes()
    except OSError as e:
        raise ConfigError(f"Failed to load system config ({conf_path}): {e.strerror}") from e
    try:
        return parse_config(data, conf_path, overrides)
    except (ConfigError, KeyFileError) as e:
        raise e.prefixed(f"Failed to load system config ({conf_path}): ") from e


def load_host_config(path: str | os.PathLike[str] | None = None,
                     overrides: Sequence[str] = ()) -> SystemConfig | None:
    """system.conf for commands that use it only if there is one (RAUC's AUTO mode: info, bundle...).

    The ``-C`` overrides are checked in any case. Without a system.conf they alone make the
    configuration (e.g. ``-C system:bundle-formats=verity`` on a build host); without either
    the result is None.
    """
    for spec in overrides:
        parse_override(spec)
    if path is not None or any(os.path.exists(p) for p in SEARCH_PATHS):
        return load_config(path, overrides)
    if not overrides:
        return None
    return parse_config(b"", None, overrides, host=True)


def parse_config(data: str | bytes, path: str | os.PathLike[str] | None = None,
                 overrides: Sequence[str] = (), *, host: bool = False) -> SystemConfig:
    """Parse system.conf content (``path`` locates relative paths).

    ``host``: a configuration made only of ``-C`` overrides, which needs no compatible and no
    bootloader.
    """
    conf_path = Path(path) if path is not None else None
    try:
        kf = KeyFile.parse(data, str(conf_path or ""))
        apply_overrides(kf, overrides)
        return _Parser(kf, conf_path).parse(host)
    except ConfigError:
        raise
    except KeyFileError as e:
        raise ConfigError(str(e)) from e
    except RaucError as e:  # pragma: no cover - defensive
        raise ConfigError(str(e)) from e


class _Parser:
    def __init__(self, kf: KeyFile, path: Path | None) -> None:
        self.kf = kf
        self.path = path
        self.base = path.parent.absolute() if path is not None else None

    def s(self, group: str, key: str) -> str | None:
        return self.kf.consume_string(group, key)

    def b(self, group: str, key: str, default: bool) -> bool:
        value = self.kf.consume_boolean(group, key, default)
        return bool(value)

    def size(self, group: str, key: str) -> int | None:
        value = self.kf.consume_string(group, key)
        return parse_size(value, key) if value is not None else None

    def path_(self, group: str, key: str) -> str | None:
        return _resolve(self.base, self.s(group, key))

    def parse(self, host: bool = False) -> SystemConfig:
        kf = self.kf
        g = "system"
        compatible = self.s(g, "compatible")
        if compatible is None and host:
            compatible = ""
        if compatible is None:
            raise ConfigError(f"Key file does not have key “compatible” in group “{g}”")
        bootloader = self.s(g, "bootloader") or ("noop" if host else None)
        if bootloader is None:
            raise ConfigError("No bootloader selected in system config")
        if bootloader not in BOOTLOADERS:
            raise ConfigError(f"Unsupported bootloader '{bootloader}' selected in system config")
        c = SystemConfig(path=self.path, compatible=compatible, bootloader=bootloader)

        c.mountprefix = self.s(g, "mountprefix") or c.mountprefix
        self._bootloader_keys(c)
        c.activate_installed = self.b(g, "activate-installed", True)
        c.perform_pre_check = self.b(g, "perform-pre-check", False)
        c.prevent_late_fallback = self.b(g, "prevent-late-fallback", False)

        c.variant_name = self.s(g, "variant-name")
        c.variant_file = self.path_(g, "variant-file")
        c.variant_dtb = self.b(g, "variant-dtb", False)
        if sum(x for x in (c.variant_name is not None, c.variant_file is not None, c.variant_dtb)) > 1:
            raise ConfigError("Only one of the keys 'variant-file', variant-dtb','variant-name' is allowed")

        for key, attr in (("max-bundle-download-size", "max_bundle_download_size"),
                          ("max-bundle-signature-size", "max_bundle_signature_size")):
            value = self.size(g, key)
            if value is not None:
                if value == 0:
                    raise ConfigError(f"Invalid value ({value}) for {key}")
                if key == "max-bundle-signature-size" and value > MAX_BUNDLE_SIGNATURE_SIZE_LIMIT:
                    # the CMS is read into memory: an absurd limit lets any bundle exhaust it
                    raise ConfigError(f"Invalid value ({value}) for {key}: must not exceed "
                                      f"{MAX_BUNDLE_SIGNATURE_SIZE_LIMIT // (1024 * 1024)} MiB")
                setattr(c, attr, value)

        formats = self.s(g, "bundle-formats")
        if formats is not None:
            c.bundle_formats = parse_bundle_formats(formats)

        mbv = self.s(g, "min-bundle-version")
        if mbv is not None and semver.parse(mbv) is None:
            raise ConfigError(
                f"Min version format invalid, expected: Major[.Minor[.Patch]][-pre_release], got: {mbv}")
        c.min_bundle_version = mbv

        self._status_location(c)
        kf.ensure_group_consumed(g)

        self._keyring(c)
        self._simple(c)
        self._slots(c)
        kf.ensure_consumed()
        return c

    def _bootloader_keys(self, c: SystemConfig) -> None:
        """Keys of one bootloader are only consumed for it (else "Invalid key")."""
        kf, g, bootloader = self.kf, "system", c.bootloader
        if bootloader == "grub":
            c.grubenv = self.path_(g, "grubenv") or c.grubenv
        if bootloader == "barebox":
            c.barebox_statename = self.s(g, "barebox-statename")
            c.barebox_dtbpath = self.path_(g, "barebox-dtbpath")
        if bootloader == "efi":
            c.efi_use_bootnext = self.b(g, "efi-use-bootnext", True)
        for key in ("boot-attempts", "boot-attempts-primary"):
            if kf.has_key(g, key):
                value = kf.consume_integer(g, key)
                if bootloader not in ("uboot", "barebox"):
                    raise ConfigError(
                        f"Configuring boot attempts is valid for uboot or barebox only (not for {bootloader})")
                if value is None or value <= 0:
                    raise ConfigError(f"Value for \"{key}\" must be greater than 0")
                setattr(c, key.replace("-", "_"), value)

    def _status_location(self, c: SystemConfig) -> None:
        """data-directory and statusfile: the central status file or per-slot status."""
        g = "system"
        c.data_directory = self.path_(g, "data-directory")
        statusfile = self.s(g, "statusfile")
        if statusfile is not None and statusfile != PER_SLOT:
            statusfile = _resolve(self.base, statusfile)
        if c.data_directory is not None:
            if statusfile == PER_SLOT:
                raise ConfigError("Using data-directory= with statusfile=per-slot is not supported.")
            c.statusfile = statusfile or os.path.join(c.data_directory, "central.raucs")
        elif statusfile is not None:
            c.statusfile = statusfile
        else:
            c.statusfile = PER_SLOT
            c.messages.append("No data directory or status file set, falling back to per-slot status.\n"
                              "Consider setting 'data-directory=<path>' explicitly.")

    def _keyring(self, c: SystemConfig) -> None:
        g = "keyring"
        if not self.kf.has_group(g):
            return
        k = c.keyring
        path = self.path_(g, "path")
        directory = self.path_(g, "directory")
        k.path = Path(path) if path else None
        k.directory = Path(directory) if directory else None
        k.check_crl = self.b(g, "check-crl", False)
        k.allow_partial_chain = self.b(g, "allow-partial-chain", False)
        k.use_bundle_signing_time = self.b(g, "use-bundle-signing-time", False)
        cns = self.kf.consume_string_list(g, "allowed-signer-cns")
        k.allowed_signer_cns = tuple(cns) if cns is not None else None
        purpose = self.s(g, "check-purpose")
        k.check_purpose = "codesign-rauc" if purpose == "codesign" else purpose
        self.kf.ensure_group_consumed(g)

    def _accept(self, group: str, keys: Sequence[str]) -> dict[str, str]:
        result: dict[str, str] = {}
        if not self.kf.has_group(group):
            return result
        for key in keys:
            if self.kf.has_key(group, key):
                result[key] = self.kf.get_string(group, key)
                self.kf.remove_key(group, key)
        self.kf.ensure_group_consumed(group)
        return result

    def _simple(self, c: SystemConfig) -> None:
        kf = self.kf
        if kf.has_group("encryption"):
            c.encryption = EncryptionConfig(key=self.path_("encryption", "key"),
                                            cert=self.path_("encryption", "cert"))
            kf.ensure_group_consumed("encryption")
        if kf.has_group("handlers"):
            g = "handlers"
            c.handlers = HandlersConfig(
                system_info=self.path_(g, "system-info"), pre_install=self.path_(g, "pre-install"),
                post_install=self.path_(g, "post-install"),
                bootloader_custom_backend=self.path_(g, "bootloader-custom-backend"))
            kf.ensure_group_consumed(g)
        c.streaming = self._accept("streaming", ("sandbox-user", "tls-cert", "tls-key", "tls-ca", "send-headers"))
        for item in c.streaming.get("send-headers", "").split(";"):
            if item and item not in SEND_HEADERS:
                raise ConfigError(f"Automatic HTTP header '{item}' not supported")
        c.casync = self._accept("casync", ("storepath", "tmppath", "install-args", "use-desync"))
        c.autoinstall = self._accept("autoinstall", ("path",))
        c.polling = self._accept("polling", ("url", "interval-sec", "max-interval-sec", "inhibit-files",
                                             "candidate-criteria", "install-criteria", "reboot-criteria",
                                             "reboot-cmd"))
        for group in list(kf.groups()):
            if group.startswith("log."):
                name = group[4:]
                c.logs[name] = self._log(c, group, name)
            elif group.startswith("artifacts."):
                name = group[len("artifacts."):]
                path = self.path_(group, "path")
                rtype = self.s(group, "type")
                if path is None:
                    raise ConfigError(f"Key file does not have key “path” in group “{group}”")
                if rtype is None:
                    raise ConfigError(f"Key file does not have key “type” in group “{group}”")
                c.artifacts[name] = ArtifactRepoConfig(name=name, path=path, type=rtype,
                                                       description=self.s(group, "description"),
                                                       parent_class=self.s(group, "parent-class"))
                kf.ensure_group_consumed(group)

    def _log(self, c: SystemConfig, group: str, name: str) -> LogConfig:
        """One ``[log.<name>]`` group, checked as RAUC's event log setup does."""
        filename = self.s(group, "filename")
        if filename is None:
            raise ConfigError(f"Key file does not have key “filename” in group “{group}”")
        if not os.path.isabs(filename):
            if not c.data_directory:
                raise ConfigError("Relative filename requires data-directory to be set")
            filename = os.path.join(c.data_directory, filename)
        log = LogConfig(name=name, filename=filename)
        events = self.kf.consume_string_list(group, "events")
        if events is not None:
            for event in events:
                if event not in (*LOG_EVENT_TYPES, "all"):
                    raise ConfigError(f"Unsupported event log type '{event}'")
            if "all" in events and len(events) > 1:
                raise ConfigError("Event type 'all' cannot be combined")
            log.events = events
        log.format = self.s(group, "format") or log.format
        if log.format not in LOG_FORMATS:
            raise ConfigError(f"Unknown log format '{log.format}'")
        log.max_size = self.size(group, "max-size")
        log.max_files = self.kf.consume_integer(group, "max-files")
        if log.max_files is not None and log.max_files < 1:
            raise ConfigError("Value for 'max-files' must be >= 1")
        if log.max_files is not None and log.max_files > 1000:
            raise ConfigError(f"Value of {log.max_files} for 'max-files' looks implausible")
        self.kf.ensure_group_consumed(group)
        return log

    def _slots(self, c: SystemConfig) -> None:
        kf = self.kf
        for group in list(kf.groups()):
            if not group.startswith("slot."):
                continue
            parts = group.split(".")
            if len(parts) != 3 or not parts[1] or not parts[2].isdigit():
                raise ConfigError(f"Invalid slot name format: {group}")
            name = f"{parts[1]}.{parts[2]}"
            device = self.s(group, "device")
            if device is None:
                raise ConfigError(f"Key file does not have key “device” in group “{group}”")
            slot = SlotConfig(name=name, sclass=parts[1], index=int(parts[2]), device=device)
            if not os.path.isabs(device) and device.startswith(("./", "../")):
                slot.device = _resolve(self.base, device) or device
            stype = self.s(group, "type")
            if stype is not None:
                if stype not in SLOT_TYPES:
                    raise ConfigError(f"Unsupported slot type '{stype}' for slot {name} selected in system config")
                slot.type = stype
            if slot.type == "jffs2" and not slot.device.startswith("/dev/"):
                raise ConfigError(f"{name}: device must be located in /dev/ for jffs2")
            if slot.type == "boot-emmc" and re.search(r"boot[0-9]+$", slot.device):
                raise ConfigError(
                    f"Invalid device for slot {name}: use the base device, not the boot partition ({slot.device})")
            slot.bootname = self.s(group, "bootname")
            slot.parent = self.s(group, "parent")
            slot.description = self.s(group, "description")
            slot.readonly = self.b(group, "readonly", False)
            install_same = kf.consume_boolean(group, "install-same")
            for alias in ("force-install-same", "ignore-checksum"):
                value = kf.consume_boolean(group, alias)
                if value is not None and install_same is None:
                    install_same = value
            slot.install_same = True if install_same is None else install_same
            slot.allow_mounted = self.b(group, "allow-mounted", False)
            slot.resize = self.b(group, "resize", False)
            if slot.resize and slot.type != "ext4":
                raise ConfigError(f"Slot '{name}' has resize=true but is not of type ext4")
            mkfs = self.s(group, "extra-mkfs-opts")
            if mkfs is not None:
                try:
                    slot.extra_mkfs_opts = shellwords.split(mkfs)
                except shellwords.ShellSplitError as e:
                    raise ConfigError(f"Failed to parse extra-mkfs-opts: {e}") from e
            slot.extra_mount_opts = self.s(group, "extra-mount-opts")
            slot.region_start = self.size(group, "region-start")
            slot.region_size = self.size(group, "region-size")
            slot.size_limit = self.size(group, "size-limit")
            slot.efi_loader = self.s(group, "efi-loader")
            slot.efi_cmdline = self.s(group, "efi-cmdline")
            kf.ensure_group_consumed(group)
            c.slots[name] = slot
        for slot in c.slots.values():
            if slot.parent is not None and slot.parent not in c.slots:
                raise ConfigError(f"Parent slot '{slot.parent}' not found!")
            if slot.parent is not None and slot.bootname is not None:   # a child boots with its parent
                raise ConfigError(f"Child slot '{slot.name}' has bootname set")
        _check_parents(c.slots)
        _check_bootnames(c.slots)
