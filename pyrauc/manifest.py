"""The RAUC manifest model (manifest.raucm and the manifest signed inside verity/crypt CMS).

Parsing is strict like RAUC's: every known key of every known group is consumed, anything left
over is an error ("Invalid key 'k' in group '[g]'", "Invalid group '[g]'").  Serialisation
(:meth:`Manifest.to_data`) writes the groups and keys in exactly the order ``rauc bundle`` does,
so a manifest parsed from a RAUC bundle is written back byte for byte.

The checks correspond to RAUC's three manifest roles: the *input* manifest of ``rauc bundle``
(:meth:`Manifest.check_input`), the *internal* ``manifest.raucm`` of a plain bundle
(:meth:`Manifest.check_internal`) and the *external* manifest carried in the CMS of verity/crypt
bundles (:meth:`Manifest.check_external`).

The AES key of crypt bundles (``crypt_key``) never appears in ``repr``/``str``; neither do the
raw manifest bytes, which may contain it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Any

from pyrauc import RAUC_COMPAT_VERSION, semver
from pyrauc.errors import KeyFileError, ManifestError
from pyrauc.keyfile import KeyFile, read_file

FORMATS = ("plain", "verity", "crypt")

IMAGE_TYPES = (
    "raw",
    "ext4",
    "vfat",
    "ubifs",
    "squashfs",
    "emptyfs",
    "tar",
    "caidx",
    "catar",
    "ext4-caibx",
    "vfat-caibx",
    "ubifs-caibx",
    "squashfs-caibx",
    "raw-caibx",
)

#: Filename patterns (GLib simple globs) tried in this order when an image has no ``type=``.
TYPE_PATTERNS: tuple[tuple[str, str], ...] = (
    ("*.ext4.caibx", "ext4-caibx"),
    ("*.vfat.caibx", "vfat-caibx"),
    ("*.ubifs.caibx", "ubifs-caibx"),
    ("*.img.caibx", "raw-caibx"),
    ("*.squashfs.caibx", "squashfs-caibx"),
    ("*.squashfs-*.caibx", "squashfs-caibx"),
    ("*.catar", "catar"),
    ("*.caidx", "caidx"),
    ("*.tar*", "tar"),
    ("*.tgz", "tar"),
    ("*.ext4", "ext4"),
    ("*.vfat", "vfat"),
    ("*.img", "raw"),
    ("*.squashfs-*", "squashfs"),
    ("*.squashfs", "squashfs"),
    ("*.ubifs", "ubifs"),
)

SLOT_HOOKS = ("pre-install", "install", "post-install")
INSTALL_HOOKS = ("install-check",)

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_SALT = re.compile(r"(?:[0-9a-fA-F]{2}){1,256}")     # dm-verity takes salts of up to 256 bytes
_META_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _glob_to_regex(pattern: str) -> re.Pattern[str]:
    """``g_pattern_match_simple`` semantics: only ``*`` and ``?`` are special."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.S)


_TYPE_REGEXES = tuple((_glob_to_regex(p), t) for p, t in TYPE_PATTERNS)


def derive_image_type(filename: str) -> str | None:
    """The image type RAUC derives from a filename, or None if no pattern matches."""
    for regex, image_type in _TYPE_REGEXES:
        if regex.fullmatch(filename):
            return image_type
    return None


@dataclass
class Image:
    """One ``[image.<slotclass>[.<variant>]]`` (or ``[image.<repo>/<artifact>]``) group."""

    slotclass: str
    variant: str | None = None
    artifact: str | None = None
    filename: str | None = None
    type: str | None = None  # only when given explicitly with type=
    sha256: str | None = None
    size: int | None = None
    hooks: list[str] = field(default_factory=list)
    adaptive: list[str] = field(default_factory=list)
    convert: list[str] = field(default_factory=list)
    converted: list[str] = field(default_factory=list)

    @property
    def group(self) -> str:
        """The key file group name of this image."""
        name = f"image.{self.slotclass}"
        if self.artifact is not None:
            name += f"/{self.artifact}"
        if self.variant is not None:
            name += f".{self.variant}"
        return name

    @property
    def effective_type(self) -> str:
        """The explicit ``type`` or the one derived from the filename (ManifestError if none)."""
        if self.type is not None:
            return self.type
        derived = derive_image_type(self.filename) if self.filename is not None else None
        if derived is None:
            raise ManifestError(
                f"No 'type=' set and unable to map extension of file '{self.filename}' to known image type"
            )
        return derived

    def type_detected(self) -> bool:
        """True if the type is derived from the filename (and therefore not written back)."""
        return self.type is None

    def _name(self) -> str:
        return self.filename if self.filename is not None else self.group


@dataclass(repr=False)
class Manifest:
    """A parsed manifest; ``to_data()`` reproduces RAUC's serialisation."""

    compatible: str
    version: str | None = None
    description: str | None = None
    build: str | None = None
    min_rauc_version: str | None = None
    bundle_format: str = "plain"
    format_explicit: bool = False
    verity_hash: str | None = None
    verity_salt: str | None = None
    verity_size: int | None = None
    crypt_key: bytes | None = None
    handler_name: str | None = None
    handler_args: str | None = None
    hook_name: str | None = None
    hooks: list[str] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)
    meta: dict[str, dict[str, str]] = field(default_factory=dict)
    raw: bytes | None = None

    def __repr__(self) -> str:
        parts: list[str] = []
        for f in dataclasses.fields(self):
            value: Any = getattr(self, f.name)
            if f.name == "crypt_key" and value is not None:
                parts.append("crypt_key='<hidden>'")
            elif f.name == "raw" and value is not None:
                parts.append(f"raw=<{len(value)} bytes>")
            else:
                parts.append(f"{f.name}={value!r}")
        return f"Manifest({', '.join(parts)})"

    __str__ = __repr__

    def copy(self) -> Manifest:
        """A deep copy (images and meta are not shared)."""
        return copy.deepcopy(self)

    # -- parsing ---------------------------------------------------------------------------
    @classmethod
    def parse(cls, data: bytes | str) -> Manifest:
        """Parse manifest bytes strictly (ManifestError / KeyFileError with RAUC's messages)."""
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        try:
            kf = KeyFile.parse(raw)
            mf = cls._parse_keyfile(kf)
        except KeyFileError as e:
            raise ManifestError(str(e)) from e
        mf.raw = raw
        return mf

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Manifest:
        """Read and parse a manifest file."""
        return cls.parse(read_file(path, ManifestError))

    @classmethod
    def _parse_keyfile(cls, kf: KeyFile) -> Manifest:
        # [update]
        compatible = kf.get_string("update", "compatible")
        if compatible == "":
            raise ManifestError("Missing value for key 'compatible'")
        kf.remove_key("update", "compatible")
        mf = cls(compatible=compatible)
        mf.version = kf.consume_string("update", "version")
        mf.description = kf.consume_string("update", "description")
        mf.build = kf.consume_string("update", "build")
        mf.min_rauc_version = kf.consume_string("update", "min-rauc-version")
        if mf.min_rauc_version is not None:
            _check_min_rauc_version(mf.min_rauc_version)
        kf.ensure_group_consumed("update")

        # [bundle]
        fmt = kf.consume_string("bundle", "format")
        if fmt is None:
            mf.bundle_format, mf.format_explicit = "plain", False
        elif fmt in FORMATS:
            mf.bundle_format, mf.format_explicit = fmt, True
        else:
            raise ManifestError(f"Invalid format value '{fmt}' in group '[bundle]'")
        if mf.bundle_format == "crypt":
            key_hex = kf.consume_string("bundle", "crypt-key")
            if key_hex is not None:
                if not _HEX64.fullmatch(key_hex):
                    raise ManifestError("Invalid key for crypt bundle")
                mf.crypt_key = bytes.fromhex(key_hex)
        if mf.bundle_format in ("verity", "crypt"):
            mf.verity_hash = kf.consume_string("bundle", "verity-hash")
            mf.verity_salt = kf.consume_string("bundle", "verity-salt")
            mf.verity_size = kf.consume_uint64("bundle", "verity-size")
        kf.ensure_group_consumed("bundle")

        # [hooks]
        mf.hook_name = kf.consume_string("hooks", "filename")
        mf.hooks = kf.consume_string_list("hooks", "hooks", []) or []
        for hook in mf.hooks:
            if hook not in INSTALL_HOOKS:
                raise ManifestError(f"install hook type '{hook}' not supported")
        kf.ensure_group_consumed("hooks")

        # [handler]
        mf.handler_name = kf.consume_string("handler", "filename")
        mf.handler_args = kf.consume_string("handler", "args")
        if mf.handler_args is not None and mf.handler_name is None:
            raise ManifestError(
                "Setting 'args' requires a full custom handler to be defined under 'filename' "
                "in group '[handler]'."
            )
        kf.ensure_group_consumed("handler")

        # [image.*], [meta.*], [rollout]
        for group in kf.groups():
            if group.startswith("image."):
                mf.images.append(_parse_image(kf, group))
            elif group.startswith("meta."):
                mf.meta[group[len("meta.") :]] = _parse_meta(kf, group)
        if kf.has_group("rollout"):
            kf.remove_group("rollout")
        kf.ensure_consumed()

        if mf.hook_name is None and (mf.hooks or any(img.hooks for img in mf.images)):
            raise ManifestError("Hooks used, but no hook 'filename' defined in [hooks] section")
        return mf

    # -- serialisation ---------------------------------------------------------------------
    def to_keyfile(self) -> KeyFile:
        """The manifest as a key file, groups and keys in RAUC's order."""
        kf = KeyFile()
        kf.set_string("update", "compatible", self.compatible)
        for key, value in (
            ("version", self.version),
            ("description", self.description),
            ("build", self.build),
        ):
            if value is not None:
                kf.set_string("update", key, value)

        if self.bundle_format == "crypt" and self.crypt_key is not None:
            kf.set_string("bundle", "crypt-key", self.crypt_key.hex())
        if self.bundle_format != "plain" or self.format_explicit:
            kf.set_string("bundle", "format", self.bundle_format)
        if self.bundle_format in ("verity", "crypt"):
            if self.verity_hash is not None:
                kf.set_string("bundle", "verity-hash", self.verity_hash)
            if self.verity_salt is not None:
                kf.set_string("bundle", "verity-salt", self.verity_salt)
            if self.verity_size:
                kf.set_uint64("bundle", "verity-size", self.verity_size)

        if self.handler_name is not None:
            kf.set_string("handler", "filename", self.handler_name)
        if self.handler_args is not None:
            kf.set_string("handler", "args", self.handler_args)

        if self.hook_name is not None:
            kf.set_string("hooks", "filename", self.hook_name)
        if self.hooks:
            kf.set_string_list("hooks", "hooks", [h for h in INSTALL_HOOKS if h in self.hooks])

        for img in self.images:
            group = img.group
            if img.sha256 is not None:
                kf.set_string(group, "sha256", img.sha256)
            if img.size is not None:
                kf.set_uint64(group, "size", img.size)
            if img.filename is not None:
                kf.set_string(group, "filename", img.filename)
            if img.type is not None:
                kf.set_string(group, "type", img.type)
            if img.hooks:
                kf.set_string_list(group, "hooks", [h for h in SLOT_HOOKS if h in img.hooks])
            for key, values in (
                ("adaptive", img.adaptive),
                ("convert", img.convert),
                ("converted", img.converted),
            ):
                if values:
                    kf.set_string_list(group, key, values)

        for label, entries in self.meta.items():
            for key, value in entries.items():
                kf.set_string(f"meta.{label}", key, value)
        return kf

    def to_data(self) -> bytes:
        """RAUC's exact serialisation (``g_key_file_to_data`` of ``prepare_manifest``)."""
        return self.to_keyfile().to_data().encode("utf-8")

    def hash(self) -> str:
        """The manifest hash: sha256 hex of the parsed bytes (or of ``to_data()`` if not parsed)."""
        return hashlib.sha256(self.raw if self.raw is not None else self.to_data()).hexdigest()

    # -- checks ----------------------------------------------------------------------------
    def check_input(self) -> None:
        """Checks of an input manifest (``rauc bundle``): no generated values may be present."""
        fmt = self.bundle_format
        if fmt in ("verity", "crypt"):
            if self.verity_hash is not None:
                raise ManifestError(f"Unexpected verity hash for {fmt} bundle in input manifest")
            if self.verity_salt is not None:
                raise ManifestError(f"Unexpected verity salt for {fmt} bundle in input manifest")
            if self.verity_size:
                raise ManifestError(f"Unexpected verity size for {fmt} bundle in input manifest")
        if self.crypt_key is not None:
            raise ManifestError("Unexpected key for crypt bundle in input manifest")
        for img in self.images:
            if img.sha256 is not None:
                raise ManifestError(f"Unexpected digest for image {img._name()} in input manifest")
            if img.size is not None:
                raise ManifestError(f"Unexpected size {img.size} for image {img._name()} in input manifest")
            if img.filename is not None and "/" in img.filename:
                raise ManifestError(f"Image filename {img.filename} must not contain '/'")
            if img.filename is not None and img.artifact is None and "install" not in img.hooks:
                img.effective_type  # noqa: B018 - raises if no type is set and none can be derived
        self._check_plain_features()

    def check_internal(self) -> None:
        """Checks of a bundle's ``manifest.raucm`` (no verity/crypt values; digests present)."""
        fmt = self.bundle_format
        if self.crypt_key is not None:
            raise ManifestError("Unexpected key for crypt bundle in internal manifest")
        if fmt in ("verity", "crypt"):
            if self.verity_hash is not None:
                raise ManifestError(f"Unexpected verity hash for {fmt} bundle in internal manifest")
            if self.verity_salt is not None:
                raise ManifestError(f"Unexpected verity salt for {fmt} bundle in internal manifest")
            if self.verity_size:
                raise ManifestError(f"Unexpected verity size for {fmt} bundle in internal manifest")
        self._check_images_bundled()
        self._check_plain_features()

    def check_external(self) -> None:
        """Checks of the manifest signed inside a verity/crypt bundle's CMS."""
        fmt = self.bundle_format
        if fmt not in ("verity", "crypt"):
            raise ManifestError(f"Unsupported bundle format '{fmt}' for external manifest")
        if not self.verity_hash:
            raise ManifestError(f"Missing hash for {fmt} bundle")
        if not _HEX64.fullmatch(self.verity_hash):
            raise ManifestError(f"Invalid hash for {fmt} bundle")
        if not self.verity_salt:
            raise ManifestError(f"Missing salt for {fmt} bundle")
        if not _SALT.fullmatch(self.verity_salt):
            raise ManifestError(f"Invalid salt for {fmt} bundle")
        if not self.verity_size:
            raise ManifestError(f"Missing size for {fmt} bundle")
        if self.verity_size % 4096 != 0:
            raise ManifestError(f"Unaligned size for {fmt} bundle")
        if fmt == "crypt":
            if self.crypt_key is None:
                raise ManifestError("Missing key for crypt bundle")
            if len(self.crypt_key) != 32:
                raise ManifestError("Invalid key for crypt bundle")
        self._check_images_bundled()

    def _check_images_bundled(self) -> None:
        for img in self.images:
            if img.filename is None:
                continue  # emptyfs or install hook: nothing in the bundle
            if img.sha256 is None:
                raise ManifestError(f"Missing digest for image {img.filename}")
            if not _HEX64.fullmatch(img.sha256):
                raise ManifestError(f"Invalid digest {img.sha256} for image {img.filename}")
            if img.size is None:
                raise ManifestError(f"Missing size for image {img.filename}")

    def _check_plain_features(self) -> None:
        if self.bundle_format != "plain":
            return
        if any(img.artifact is not None for img in self.images):
            raise ManifestError("Artifacts are not supported in plain bundles")
        if any(img.convert for img in self.images):
            raise ManifestError("Image converters are not supported in plain bundles")


def _check_min_rauc_version(value: str) -> None:
    parsed = semver.parse(value)
    if parsed is None:
        raise ManifestError(
            "Failed to parse 'min-rauc-version'. Expected 'Major[.Minor[.Patch]][-pre_release]]', "
            f"got '{value}'"
        )
    if (parsed.major, parsed.minor) < (1, 14):
        raise ManifestError(
            f"Minimum RAUC version field in manifest is only supported since 1.14 (not '{value}')"
        )
    current = semver.parse(RAUC_COMPAT_VERSION)
    assert current is not None
    if parsed > current:
        raise ManifestError(
            f"Minimum RAUC version in manifest ({value}) is newer than current version "
            f"({RAUC_COMPAT_VERSION})"
        )


def _parse_image(kf: KeyFile, group: str) -> Image:
    parts = group.split(".", 2)
    slotclass = parts[1] if len(parts) > 1 else ""
    variant = parts[2] if len(parts) > 2 else None
    artifact: str | None = None
    if "/" in slotclass:
        slotclass, artifact = slotclass.split("/", 1)
        if not slotclass or not artifact:
            raise ManifestError(f"Invalid group '[{group}]'")
    if not slotclass or variant == "":
        raise ManifestError(f"Invalid group '[{group}]'")
    img = Image(slotclass=slotclass, variant=variant, artifact=artifact)

    img.sha256 = kf.consume_string(group, "sha256")
    img.size = kf.consume_uint64(group, "size")
    img.filename = kf.consume_string(group, "filename")
    img.type = kf.consume_string(group, "type")
    img.hooks = kf.consume_string_list(group, "hooks", []) or []
    img.adaptive = kf.consume_string_list(group, "adaptive", []) or []
    img.convert = kf.consume_string_list(group, "convert", []) or []
    img.converted = kf.consume_string_list(group, "converted", []) or []
    for legacy in ("version", "description", "build"):
        if kf.has_key(group, legacy):
            kf.remove_key(group, legacy)
    kf.ensure_group_consumed(group)

    for hook in img.hooks:
        if hook not in SLOT_HOOKS:
            raise ManifestError(f"slot hook type '{hook}' not supported")
    if img.type is not None:
        if img.type not in IMAGE_TYPES:
            raise ManifestError(f"Unsupported image type '{img.type}'")
        if artifact is not None:
            raise ManifestError(f"Setting 'type' is not supported for artifacts (group '[{group}]')")
        if img.type == "emptyfs" and img.filename is not None:
            raise ManifestError("It is not supported setting 'filename' when 'type=emptyfs' is set")
    if img.filename is None:
        if img.type != "emptyfs" and "install" not in img.hooks:
            raise ManifestError(f"Missing required 'filename' in group '[{group}]'")
    else:
        if "/" in img.filename:
            raise ManifestError(f"Image filename {img.filename} must not contain '/'")
    return img


def _parse_meta(kf: KeyFile, group: str) -> dict[str, str]:
    label = group[len("meta.") :]
    if not _META_NAME.fullmatch(label):
        raise ManifestError(f"Invalid group '[{group}]'")
    entries: dict[str, str] = {}
    for key in kf.keys(group):
        if not _META_NAME.fullmatch(key):
            raise ManifestError(f"Invalid key '{key}' in group '[{group}]'")
        entries[key] = kf.get_string(group, key)
    kf.remove_group(group)
    return entries
