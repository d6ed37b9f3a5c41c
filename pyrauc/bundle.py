"""Bundles: create, open, check, extract, resign, replace the signature, encrypt.

A bundle is ``payload || CMS (DER) || uint64 big-endian CMS size``. The payload is a squashfs
(plain), a squashfs followed by its dm-verity hash tree (verity), or an AES-256-CBC encrypted
squashfs followed by the hash tree over the ciphertext (crypt). The CMS is SignedData (detached
for plain, with the manifest inside for verity/crypt), or, for encrypted crypt bundles,
EnvelopedData around that SignedData (RAUC's src/bundle.c; the layout is in docs/design.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar

from cryptography import x509

from pyrauc import crypt, envelope, keys, signature, squashfs, verity
from pyrauc.errors import BundleError, EnvelopeError, ManifestError, RaucError, SignatureError
from pyrauc.keyring import require_keyring
from pyrauc.manifest import Image, Manifest, derive_image_type
from pyrauc.progress import Progress
from pyrauc.signature import Keyring, Verified

BUNDLE_FORMATS = ("plain", "verity", "crypt")
DEFAULT_MAX_SIGNATURE_SIZE = 64 * 1024
PLAIN_MAX_PAYLOAD = 2**31 - 1
COPY_CHUNK = 4 * 1024 * 1024

Log = Callable[[str], None]
T = TypeVar("T")


logger = logging.getLogger(__name__)


def _no_out(msg: str) -> None:
    """Discard the lines RAUC prints on stdout (library use)."""


def _format_size(size: int, base: int, units: tuple[str, ...]) -> str:
    """GLib's short size: "N bytes" below ``base``, else one decimal in the fitting unit of ``units``."""
    if size < base:
        return f"{size} bytes" if size != 1 else "1 byte"
    value = float(size)
    for unit in units:
        value /= base
        if value < base or unit == units[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def format_size(size: int) -> str:
    """GLib's g_format_size with G_FORMAT_SIZE_IEC_UNITS ("64.0 KiB")."""
    return _format_size(size, 1024, ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"))


def format_size_long(size: int) -> str:
    """GLib's g_format_size_full(G_FORMAT_SIZE_LONG_FORMAT): "65.5 kB (65536 bytes)"."""
    short = _format_size(size, 1000, ("kB", "MB", "GB", "TB", "PB", "EB"))
    return short if size < 1000 else f"{short} ({size} bytes)"


# --------------------------------------------------------------------------------------------
# output files: never leave a partial file behind, never clobber an existing one

def _open_error(path: Path, e: OSError) -> str:
    return f"Error opening file \u201c{path}\u201d: {e.strerror}"


@contextlib.contextmanager
def _new_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it becomes ``path`` (no clobbering).

    The temporary file goes on any failure, SIGTERM (raised as KeyboardInterrupt by the CLI)
    included; an OSError while it is written (ENOSPC, EIO) becomes one BundleError line.
    """
    if path.exists() or path.is_symlink():
        raise BundleError(f"bundle {path} already exists")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    except OSError as e:
        raise BundleError(f"failed to open bundle for writing: {_open_error(path, e)}") from None
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)      # a bundle is no secret: created like any other file
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            yield tmp
        except OSError as e:
            where = f" ({e.filename})" if e.filename else ""
            raise BundleError(f"failed to write {path}: {e.strerror or e}{where}") from None
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise BundleError(f"bundle {path} already exists") from None
        except OSError:
            if path.exists():
                raise BundleError(f"bundle {path} already exists") from None
            os.rename(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _append_signature(path: Path, cms: bytes) -> None:
    with open(path, "ab") as f:
        f.write(cms)
        f.write(len(cms).to_bytes(8, "big"))
        f.flush()
        os.fsync(f.fileno())
    if len(cms) > DEFAULT_MAX_SIGNATURE_SIZE:
        logger.warning(f"Resulting signature size of {format_size(len(cms))} exceeds default of "
            f"{format_size(DEFAULT_MAX_SIGNATURE_SIZE)}. Make sure to set 'max-bundle-signature-size' "
            "in the target's system.conf accordingly.")


def _copy_range(src: Path, dst: Path, size: int) -> None:
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        remaining = size
        while remaining:
            chunk = fi.read(min(COPY_CHUNK, remaining))
            if not chunk:
                raise BundleError(f"unexpected end of file in {src}")
            fo.write(chunk)
            remaining -= len(chunk)


# --------------------------------------------------------------------------------------------
# creating

WORKDIR_PREFIX = ".rauc-workdir"
HASH_INDEX_SUFFIX = ".block-hash-index"
ADAPTIVE_METHODS = ("block-hash-index",)
_MAX_INDEX_BLOCKS = 0x7FFFFFF


def _prepare_workdir(contentdir: Path) -> Path:
    """A new private ``<contentdir>/.rauc-workdir-XXXXXX`` filled with hard links of the content.

    RAUC links the content into ``.rauc-workdir`` (hard links need the same file system); a
    private name per run keeps two runs on one content directory apart. On a refused content
    (absolute symlink, hidden directory, ...) the work directory is removed again.
    """
    workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX + "-", dir=contentdir))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(workdir, 0o777 & ~umask)    # the bundle's root directory: as mkdir would make it
        _link_content(contentdir, workdir)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return workdir


def _link_content(contentdir: Path, workdir: Path) -> None:
    for root, dirs, files in os.walk(contentdir):
        rel = Path(root).relative_to(contentdir)
        if rel == Path("."):
            dirs[:] = [d for d in dirs if not d.startswith(WORKDIR_PREFIX)]
            for d in dirs:
                if d.startswith("."):
                    raise BundleError(f"hidden directories are not supported as bundle contents ({d})")
        for d in list(dirs):
            src = Path(root) / d
            if src.is_symlink():
                dirs.remove(d)
                files.append(d)
                continue
            (workdir / rel / d).mkdir()
        for name in files:
            src = Path(root) / name
            dst = workdir / rel / name
            if rel == Path(".") and name == "manifest.raucm":
                continue
            if src.is_symlink():
                target = os.readlink(src)
                if os.path.isabs(target):
                    raise BundleError(f"absolute symlinks are not supported as bundle contents ({src})")
                if "/" in target:
                    raise BundleError(f"symlinks containing slashes are not supported as bundle contents ({src})")
                os.symlink(target, dst)
            elif src.is_file():
                os.link(src, dst)
            else:
                raise BundleError(f"only regular files are supported as bundle contents ({src})")


def _digest_image(path: Path, index: Path | None) -> tuple[str, int]:
    """sha256 and size of the image at ``path``; with ``index``, also write its block hash index
    there (the sha256 of every 4096-byte block, concatenated) in the same pass."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f, (open(index, "wb") if index else contextlib.nullcontext()) as idx:
        while chunk := f.read(COPY_CHUNK):
            h.update(chunk)
            size += len(chunk)
            if idx is not None:
                idx.write(b"".join(hashlib.sha256(chunk[i:i + verity.BLOCK_SIZE]).digest()
                                   for i in range(0, len(chunk), verity.BLOCK_SIZE)))
    return h.hexdigest(), size


def _check_index_source(image: Image, path: Path) -> None:
    """RAUC's conditions for a block hash index, checked before the image is read."""
    size = path.stat().st_size
    prefix = f"Failed to generate hash index for {image.filename}: "
    if size == 0:
        raise BundleError(prefix + "image/partition is empty")
    if size % verity.BLOCK_SIZE:
        raise BundleError(prefix + f"image/partition size ({size}) is not a multiple of 4096 bytes")
    if size // verity.BLOCK_SIZE > _MAX_INDEX_BLOCKS:
        raise BundleError(prefix + f"image/partition size ({size}) is too large")
    if derive_image_type(path.name) == "tar" or ".tar" in path.name:
        logger.warning(f"Generating block hash index requires a block device image but {image.filename} looks like an "
            "archive")


def _fill_image_digests(manifest: Manifest, contentdir: Path, workdir: Path) -> None:
    """Digest and size of every image into the manifest; block hash indexes into ``workdir``."""
    for image, path, index in _check_images(manifest, contentdir, workdir):
        image.sha256, image.size = _digest_image(path, index)


def _check_images(manifest: Manifest, contentdir: Path, workdir: Path) -> list[tuple[Image, Path, Path | None]]:
    """RAUC's checks of the images and the hook; (image, its file, its block hash index) to digest."""
    todo: list[tuple[Image, Path, Path | None]] = []
    for image in manifest.images:
        unknown = [m for m in image.adaptive if m not in ADAPTIVE_METHODS]
        if unknown:
            raise BundleError(f"Unsupported adaptive method: {unknown[0]}")
        if image.filename is None:
            if image.adaptive:
                raise BundleError("'adaptive' requires 'filename' to be set")
            continue
        path = contentdir / image.filename
        if not path.is_file():
            raise BundleError(
                f"image file '{image.filename}' for slot '{image.slotclass}' does not exist in bundle "
                f"content dir ({contentdir})"
            )
        index = None
        if "block-hash-index" in image.adaptive:
            _check_index_source(image, path)
            index = workdir / (image.filename + HASH_INDEX_SUFFIX)
            index.unlink(missing_ok=True)
        todo.append((image, path, index))
    if manifest.hook_name and not (contentdir / manifest.hook_name).is_file():
        raise BundleError(f"hook file '{manifest.hook_name}' does not exist in bundle content dir ({contentdir})")
    return todo


def _make_squashfs(manifest: Manifest, contentdir: Path, workdir: Path, output: Path,
                   mksquashfs_args: str | None, keep_metadata: bool) -> None:
    """The bundle's squashfs at ``output``: the content (linked in ``workdir``), the manifest with
    the images' digests and sizes, and block hash indexes.

    RAUC digests the images, writes the manifest and then runs mksquashfs, which compresses on
    about one core. With RAUC's default mksquashfs arguments pyrauc squashes the content while it
    digests the images (both read the same files, from the page cache) and then appends the
    manifest and the indexes with a second, short mksquashfs run: the same files in the image, and
    the digests take no time of their own. With --mksquashfs-args or kept metadata (tar-extract
    conversion) it keeps RAUC's order, as an append run could treat those options differently.
    """
    if mksquashfs_args or keep_metadata:
        _fill_image_digests(manifest, contentdir, workdir)
        (workdir / "manifest.raucm").write_bytes(manifest.to_data())
        squashfs.mksquashfs(workdir, output, mksquashfs_args, keep_metadata=keep_metadata)
        return
    from concurrent.futures import ThreadPoolExecutor, wait

    late = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX + "-", dir=workdir.parent))
    try:
        os.chmod(late, os.stat(workdir).st_mode & 0o7777)   # the root directory's mode, as in workdir
        todo = _check_images(manifest, contentdir, late)
        with ThreadPoolExecutor(1, thread_name_prefix="mksquashfs") as pool:
            squashed = pool.submit(squashfs.mksquashfs, workdir, output)
            try:
                for image, path, index in todo:
                    image.sha256, image.size = _digest_image(path, index)
            finally:
                wait([squashed])
            squashed.result()
        (late / "manifest.raucm").write_bytes(manifest.to_data())
        squashfs.mksquashfs(late, output, append=True)
    finally:
        shutil.rmtree(late, ignore_errors=True)


def _load_signer(cert: str, key: str, intermediates: Sequence[str], what: str
                 ) -> tuple[x509.Certificate, keys.PrivateKey, list[x509.Certificate]]:
    """The signer's certificate and key, and the intermediates, loaded before any work is done;
    errors as RAUC reports them when it signs ("failed to sign manifest: ...", or bundle)."""
    try:
        return (keys.load_cert(cert), keys.load_private_key(key),
                [c for path in intermediates for c in keys.load_certs(path)])
    except RaucError as e:
        raise e.prefixed(f"failed to sign {what}: ") from e


def _sign(manifest_data: bytes | None, signer: tuple[x509.Certificate, keys.PrivateKey],
          intermediates: Sequence[x509.Certificate], keyring: Keyring | None, detached_path: Path | None = None,
          detached_size: int | None = None) -> bytes:
    """RAUC's signing step: the CMS (inline over the manifest, or detached over the payload),
    then, with a keyring, the check of that new signature; errors are "failed to sign ...: "."""
    what = "bundle" if manifest_data is None else "manifest"
    cert, key = signer
    try:
        cms = signature.cms_sign(manifest_data, cert=cert, key=key, intermediates=intermediates,
                                 detached_path=detached_path, detached_size=detached_size)
        if keyring is None:
            logger.info("No keyring given, skipping signature verification")
            return cms
        logger.info("Keyring given, doing signature verification")
        verified = signature.cms_verify(cms, keyring, detached_path=detached_path, detached_size=detached_size)
    except RaucError as e:
        raise e.prefixed(f"failed to sign {what}: ") from e
    logger.info("Verified %s signature by '%s'", "detached" if manifest_data is None else "inline",
                signature.format_name(verified.signer.subject))
    return cms


def _append_signer(inbundle: Bundle, signer: tuple[x509.Certificate, keys.PrivateKey],
                   intermediates: Sequence[x509.Certificate], keyring: Keyring | None, tmp: Path) -> bytes:
    """``resign --append``: the SignedData with one more signer, every signer checked against the
    keyring (if any). Like RAUC, pyrauc's own verification refuses bundles with several signers
    ("Unsupported number of signers"): they are for tools that check each signature."""
    what = "bundle" if inbundle.detached else "manifest"
    cert, key = signer
    try:
        cms = signature.cms_add_signer(inbundle.sigdata, cert=cert, key=key, intermediates=intermediates)
        if keyring is not None:
            logger.info("Keyring given, doing signature verification")
            detached = (tmp, inbundle.size) if inbundle.detached else (None, None)
            verified = signature.cms_verify_signers(cms, keyring, detached_path=detached[0],
                                                    detached_size=detached[1])
            logger.info("Verified %s signature by %s", "detached" if inbundle.detached else "inline",
                        ", ".join(f"'{signature.format_name(v.signer.subject)}'" for v in verified))
    except RaucError as e:
        raise e.prefixed(f"failed to sign {what}: ") from e
    return cms


def create_bundle(
    contentdir: Path | str,
    bundle: Path | str,
    *,
    cert: str,
    key: str,
    intermediates: Sequence[str] = (),
    signing_keyring: Keyring | None = None,
    mksquashfs_args: str | None = None,
    out: Log = _no_out,
    progress: Progress | None = None,
) -> Manifest:
    """Create a signed bundle from ``contentdir`` (which holds ``manifest.raucm``)."""
    contentdir = Path(contentdir)
    bundle = Path(bundle)
    try:
        return _create_bundle(contentdir, bundle, cert, key, intermediates, signing_keyring,
                              mksquashfs_args, out, progress)
    except RaucError as e:
        raise e.prefixed("Failed to create bundle: ") from e


def _create_bundle(contentdir: Path, bundle: Path, cert: str, key: str, intermediates: Sequence[str],
                   signing_keyring: Keyring | None, mksquashfs_args: str | None, out: Log,
                   progress: Progress | None) -> Manifest:
    if bundle.exists() or bundle.is_symlink():
        raise BundleError(f"bundle {bundle} already exists")
    manifest = Manifest.load(contentdir / "manifest.raucm")
    manifest.check_input()
    signer_cert, signer_key, inter_certs = _load_signer(
        cert, key, intermediates, "bundle" if manifest.bundle_format == "plain" else "manifest")
    if not manifest.format_explicit:
        logger.warning("WARNING: The manifest does not specify a bundle format, defaulting to 'plain'.")
        logger.warning("  We recommend using the 'verity' format instead, if possible.")
        logger.warning("  To silence this warning, select the 'plain' format explicitly.")
        logger.warning("  See https://rauc.readthedocs.io/en/latest/reference.html#sec-ref-formats for details.'")
    fmt = manifest.bundle_format
    out(f"Creating '{fmt}' format bundle")
    keep_metadata = any("tar-extract" in image.convert for image in manifest.images)

    workdir = _prepare_workdir(contentdir)
    try:
        with _new_output(bundle) as tmp:
            _make_squashfs(manifest, contentdir, workdir, tmp, mksquashfs_args, keep_metadata)
            shutil.rmtree(workdir)
            data_size = tmp.stat().st_size
            if fmt == "plain":
                if data_size > PLAIN_MAX_PAYLOAD:
                    raise BundleError(f"Bundle payload size {data_size} exceeds maximum for bundles using "
                                      "plain format (2 GiB)")
                manifest.check_internal()
                cms = _sign(None, (signer_cert, signer_key), inter_certs, signing_keyring, tmp, data_size)
            else:
                if data_size % verity.BLOCK_SIZE:
                    raise BundleError(f"squashfs size ({data_size}) is not a multiple of 4096 bytes")
                if data_size <= verity.BLOCK_SIZE:
                    raise BundleError(f"squashfs size ({data_size}) must be larger than 4096 bytes")
                encrypt = None
                if fmt == "crypt":
                    manifest.crypt_key = secrets.token_bytes(32)
                    logger.info("Encrypting bundle payload in aes-cbc-plain64 mode")
                    encrypt = crypt.encryptor(manifest.crypt_key)
                salt = secrets.token_bytes(32)
                # one pass: each chunk is encrypted (crypt), written back and hashed
                root = verity.create_hash_tree(tmp, data_size, salt, progress=progress, transform=encrypt)
                manifest.verity_hash = root.hex()
                manifest.verity_salt = salt.hex()
                manifest.verity_size = tmp.stat().st_size - data_size
                manifest_data = manifest.to_data()
                checked = Manifest.parse(manifest_data)
                try:
                    checked.check_external()
                except ManifestError as e:
                    raise e.prefixed("cannot sign inconsistent manifest: ") from e
                cms = _sign(manifest_data, (signer_cert, signer_key), inter_certs, signing_keyring)
            _append_signature(tmp, cms)
    finally:
        if workdir.exists():
            shutil.rmtree(workdir, ignore_errors=True)
    return manifest


# --------------------------------------------------------------------------------------------
# opening

@dataclass
class Bundle:
    """An opened bundle: its framing, (decrypted) signature and manifest."""

    path: Path
    size: int                          # payload size
    cms: bytes                         # the trailing CMS exactly as stored
    sigdata: bytes                     # the SignedData (decrypted when the bundle is encrypted)
    manifest: Manifest
    detached: bool
    verified: Verified | None
    encrypted: bool = False
    content_key: bytes | None = dataclasses.field(default=None, repr=False)   # of the EnvelopedData
    source: RemoteSource | None = None     # a streamed bundle: where its bytes come from

    def opened_envelope(self) -> envelope.Opened:
        """The decrypted EnvelopedData (SignedData and content-encryption key), to re-encrypt."""
        if self.content_key is None:
            raise BundleError("content-encryption key of the encrypted bundle is unknown")
        return envelope.Opened(self.sigdata, self.content_key)

    @property
    def format(self) -> str:
        return self.manifest.bundle_format

    @property
    def location(self) -> str:
        """The URL of a streamed bundle, else its path."""
        return self.source.url if self.source is not None else str(self.path)

    def close(self) -> None:
        """Release what reading the bundle needs (a streamed bundle: its HTTP client or NBD helper)."""
        if self.source is not None:
            self.source.close()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def squashfs_size(self) -> int:
        """Size of the (possibly encrypted) squashfs part of the payload."""
        if self.detached:
            return self.size
        return self.size - (self.manifest.verity_size or 0)

    def __repr__(self) -> str:
        return f"Bundle(path={self.location}, format={self.format}, size={self.size}, encrypted={self.encrypted})"


class RemoteSource(Protocol):
    """The bytes of a bundle on a server (:class:`pyrauc.stream.HttpSource`, :class:`pyrauc.nbd.NbdSource`)."""

    url: str          # for messages (no password)
    size: int         # the bundle file's size

    def read(self, offset: int, length: int) -> bytes: ...
    def close(self) -> None: ...


STREAMING_FAQ = "https://rauc.readthedocs.io/en/latest/faq.html#what-causes-a-payload-size-that-is-not-a-multiple-of-4kib"


def read_remote_framing(source: RemoteSource, max_signature_size: int = DEFAULT_MAX_SIGNATURE_SIZE
                        ) -> tuple[int, bytes]:
    """``(payload_size, cms)`` of a streamed bundle: the last 8 bytes, then the CMS (RAUC's messages)."""
    size = source.size
    prefix = "Invalid bundle format: "
    if size < 8:
        raise BundleError(f"{prefix}Bundle size ({size}) is too small")
    try:
        sigsize = int.from_bytes(source.read(size - 8, 8), "big")
    except RaucError as e:
        raise BundleError(f"{prefix}Failed to read signature size from bundle: {e}") from e
    if sigsize == 0:
        raise BundleError(f"{prefix}Signature size is 0")
    if sigsize > size - 8:
        raise BundleError(f"{prefix}Signature size ({sigsize}) exceeds bundle size")
    if sigsize > max_signature_size:
        raise BundleError(f"{prefix}Signature size ({sigsize}) exceeds max-bundle-signature-size "
                          f"({max_signature_size})")
    payload_size = size - 8 - sigsize
    if payload_size % verity.BLOCK_SIZE:
        raise BundleError(f"{prefix}Payload size ({payload_size}) is not a multiple of 4KiB. See {STREAMING_FAQ}")
    try:
        cms = source.read(payload_size, sigsize)
    except RaucError as e:
        raise BundleError(f"{prefix}Failed to read signature from bundle: {e}") from e
    return payload_size, cms


def read_framing(path: Path, max_signature_size: int = DEFAULT_MAX_SIGNATURE_SIZE) -> tuple[int, bytes]:
    """Return ``(payload_size, cms)`` of the bundle at ``path`` (errors per RAUC)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise BundleError(f"No such file: {path}") from None
    if not path.is_file():
        raise BundleError("Invalid bundle format: Bundle is not a regular file")
    if st.st_size < 8:          # RAUC seeks to 8 bytes before the end: GLib's words for EINVAL
        raise BundleError("Invalid bundle format: Failed to seek to end of bundle: Error seeking in file: "
                          "Invalid argument")
    with open(path, "rb") as f:
        f.seek(st.st_size - 8)
        sigsize = int.from_bytes(f.read(8), "big")
        if sigsize == 0:
            raise BundleError("Invalid bundle format: Signature size is 0")
        if sigsize > st.st_size - 8:
            raise BundleError(f"Invalid bundle format: Signature size ({sigsize}) exceeds bundle size")
        if sigsize > max_signature_size:
            raise BundleError(f"Invalid bundle format: Signature size ({sigsize}) exceeds "
                              f"max-bundle-signature-size ({max_signature_size})")
        payload_size = st.st_size - 8 - sigsize
        if payload_size % 4096:
            logger.info(f"Payload size ({payload_size}) is not a multiple of 4KiB. See "
                        "https://rauc.readthedocs.io/en/latest/faq.html"
                        "#what-causes-a-payload-size-that-is-not-a-multiple-of-4kib")
        f.seek(payload_size)
        cms = f.read(sigsize)
    return payload_size, cms


def _parsed(parse: Callable[[bytes], T], cms: bytes) -> T:
    """``parse(cms)``, with RAUC's message for a CMS that is not one."""
    try:
        return parse(cms)
    except SignatureError as e:
        if str(e) != "Failed to parse CMS":
            raise
        raise BundleError("Invalid bundle format: Signature data is no valid CMS") from e


def open_bundle(
    source: Path | str | RemoteSource,
    *,
    keyring: Keyring | None,
    verify: bool = True,
    key: str | None = None,
    cert: str | None = None,
    allowed_formats: Sequence[str] | None = None,
    max_signature_size: int = DEFAULT_MAX_SIGNATURE_SIZE,
) -> Bundle:
    """Open a bundle: read the framing, decrypt if needed, verify the signature, load the manifest.

    ``source`` is a local file, or a :class:`RemoteSource` (a streamed bundle: its framing and CMS
    are read from there, only verity and crypt bundles are accepted - dm-verity authenticates every
    block read later - and the returned bundle owns the source, see :meth:`Bundle.close`).
    The payload itself is not checked here (see :func:`check_payload`), as in RAUC.
    """
    remote: RemoteSource | None = None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        size, cms = read_framing(path, max_signature_size)
    else:
        remote, path = source, Path(source.url)
        size, cms = read_remote_framing(source, max_signature_size)
    kind = _parsed(signature.cms_type, cms)
    encrypted = False
    sigdata = cms
    content_key: bytes | None = None
    if kind == "envelopedData":
        if key is None:
            raise BundleError("Encrypted bundle detected, but no decryption key given. "
                              "Use --key=<PEMFILE|PKCS11-URL> to provide one.")
        logger.info("Decrypting signature...")
        try:
            private_key = keys.load_private_key(key)
            recipient = keys.load_cert(cert) if cert else None
            opened = envelope.open_envelope(cms, private_key, recipient)
            sigdata, content_key = opened.content, opened.content_key
        except RaucError as e:
            raise e.prefixed("Failed to decrypt bundle: ") from e
        encrypted = True
        kind = _parsed(signature.cms_type, sigdata)
    if kind != "signedData":
        raise SignatureError(f"Expected CMS of type 'pkcs7-signedData' but got '{kind}'")

    content = _parsed(signature.cms_content, sigdata)
    detached = content is None
    if detached and remote is not None:
        raise BundleError("Bundle format 'plain' not supported in streaming mode")
    verified: Verified | None = None
    if verify:
        keyring = require_keyring(keyring)
        logger.info("Verifying bundle signature... ")
        if detached:
            verified = signature.cms_verify(sigdata, keyring, detached_path=path, detached_size=size)
        else:
            verified = signature.cms_verify(sigdata, keyring)
        logger.info(f"Verified {'detached' if detached else 'inline'} signature by "
            f"'{signature.format_name(verified.signer.subject)}'")

    if detached:
        try:
            raw = squashfs.cat_file(path, "manifest.raucm")
        except BundleError as e:
            raise BundleError(f"Failed to load manifest: {e}") from e
        manifest = Manifest.parse(raw)
        if manifest.bundle_format != "plain":
            raise BundleError(f"Invalid bundle format: detached signature for '{manifest.bundle_format}' "
                              "bundle")
        manifest.check_internal()
    else:
        assert content is not None
        manifest = Manifest.parse(content)
        if manifest.bundle_format == "plain":
            raise BundleError("Invalid bundle format: inline signature for 'plain' bundle")
        manifest.check_external()
        if manifest.verity_size is None or manifest.verity_size >= size:
            raise BundleError("Invalid bundle format: verity size does not fit the payload")
    if encrypted and manifest.bundle_format != "crypt":
        raise BundleError("Invalid bundle format: encrypted signature for non-crypt bundle")
    if allowed_formats is not None and manifest.bundle_format not in allowed_formats:
        raise BundleError(f"Bundle format '{manifest.bundle_format}' not allowed")
    return Bundle(path, size, cms, sigdata, manifest, detached, verified, encrypted, content_key, remote)


def check_payload(bundle: Bundle, progress: Progress | None = None) -> None:
    """Verify the payload in user space: the dm-verity tree of verity/crypt bundles.

    Plain bundles are covered by the detached signature and need nothing here.
    """
    mf = bundle.manifest
    if bundle.detached:
        return
    assert mf.verity_salt is not None and mf.verity_hash is not None
    logger.info("Verifying bundle payload... ")
    verity.verify_hash_tree(bundle.path, bundle.squashfs_size, bytes.fromhex(mf.verity_salt),
                            bytes.fromhex(mf.verity_hash), progress=progress)


# --------------------------------------------------------------------------------------------
# extracting

def extract_bundle(bundle: Bundle, outdir: Path | str, progress: Progress | None = None) -> None:
    """Check the payload and extract the bundle's squashfs into the new directory ``outdir``."""
    outdir = Path(outdir)
    try:
        if outdir.exists():
            raise BundleError(f"output directory '{outdir}' exists already")
        check_payload(bundle, progress)
        if bundle.format == "crypt":
            assert bundle.manifest.crypt_key is not None
            with _anonymous_file() as decrypted:
                crypt.decrypt_file(bundle.path, bundle.squashfs_size, bundle.manifest.crypt_key, decrypted)
                decrypted.flush()
                _unsquash(decrypted.fileno(), outdir)
        else:
            _unsquash(bundle.path, outdir)
    except RaucError as e:
        raise e.prefixed("Failed to extract bundle: ") from e


@contextlib.contextmanager
def _anonymous_file() -> Iterator[BinaryIO]:
    """A read-write file without a name (O_TMPFILE in $TMPDIR, else memfd), mode 0600.

    The decrypted payload of an encrypted bundle goes there: no other process can open it by
    name, and nothing is left on disk after SIGKILL or a power loss.
    """
    try:
        fd = os.open(tempfile.gettempdir(), os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError:
        fd = os.memfd_create("pyrauc-decrypted", os.MFD_CLOEXEC)
    with os.fdopen(fd, "w+b") as f:
        yield f


def _unsquash(image: Path | int, outdir: Path) -> None:
    try:
        squashfs.unsquashfs(image, outdir)
    except BaseException:
        shutil.rmtree(outdir, ignore_errors=True)
        raise


def extract_signature(bundle: Bundle, output: Path | str) -> None:
    """Write the bundle's SignedData (decrypted for encrypted bundles) to the new file ``output``."""
    output = Path(output)
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise BundleError("Failed to extract signature: failed to create file to store signature: "
                          + _open_error(output, e)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(bundle.sigdata)
    except OSError as e:
        output.unlink(missing_ok=True)
        raise BundleError(f"Failed to extract signature: failed to write {output}: {e.strerror}") from None


# --------------------------------------------------------------------------------------------
# resign, replace-signature, encrypt

def resign_bundle(
    inbundle: Bundle,
    outpath: Path | str,
    *,
    cert: str,
    key: str,
    intermediates: Sequence[str] = (),
    signing_keyring: Keyring | None = None,
    append: bool = False,
    out: Log = _no_out,
) -> None:
    """Sign the payload of ``inbundle`` anew (the manifest, crypt key and verity values are kept).

    With ``append`` the new signer is added to the existing SignedData instead (RAUC 1.15's
    ``resign --append``); such bundles carry several signers.
    """
    outpath = Path(outpath)
    try:
        check_payload(inbundle)
        out(f"Resigning '{inbundle.format}' format bundle")
        signer_cert, signer_key, inter_certs = _load_signer(cert, key, intermediates,
                                                            "bundle" if inbundle.detached else "manifest")
        with _new_output(outpath) as tmp:
            _copy_range(inbundle.path, tmp, inbundle.size)
            if append:
                cms = _append_signer(inbundle, (signer_cert, signer_key), inter_certs, signing_keyring, tmp)
            elif inbundle.detached:
                cms = _sign(None, (signer_cert, signer_key), inter_certs, signing_keyring, tmp, inbundle.size)
            else:
                content = signature.cms_content(inbundle.sigdata)
                assert content is not None
                cms = _sign(content, (signer_cert, signer_key), inter_certs, signing_keyring)
            if inbundle.encrypted:
                cms = envelope.reencrypt(inbundle.cms, inbundle.opened_envelope(), cms)
            _append_signature(tmp, cms)
            if append and not inbundle.encrypted:
                # never write a bundle pyrauc cannot read back: its framing, CMS and manifest
                open_bundle(tmp, keyring=None, verify=False)
    except RaucError as e:
        raise e.prefixed("Failed to resign bundle: ") from e


def replace_signature(
    inbundle: Bundle,
    signature_path: Path | str,
    outpath: Path | str,
    *,
    keyring: Keyring | None,
    out: Log = _no_out,
) -> None:
    """Replace the CMS of ``inbundle`` by the DER file ``signature_path`` and check the result."""
    outpath = Path(outpath)
    try:
        check_payload(inbundle)
        out(f"Replacing signature for '{inbundle.format} format bundle")
        try:
            newsig = Path(signature_path).read_bytes()
        except OSError as e:
            raise BundleError("failed to read signature file: "     # GLib's words
                              f"Failed to open file \u201c{signature_path}\u201d: {e.strerror}") from e
        with _new_output(outpath) as tmp:
            _copy_range(inbundle.path, tmp, inbundle.size)
            cms = newsig
            if inbundle.encrypted and signature.cms_type(newsig) == "signedData":
                cms = envelope.reencrypt(inbundle.cms, inbundle.opened_envelope(), newsig)
            _append_signature(tmp, cms)
            if keyring is not None:
                logger.info("Keyring given, enabling signature verification")
            else:
                logger.info("No keyring given, disabling signature verification")
            try:
                if inbundle.encrypted:
                    # the new CMS must still carry a valid signature for the same payload
                    newbundle = Bundle(tmp, inbundle.size, cms, newsig, Manifest.parse(
                        signature.cms_content(newsig) or b""), False, None, True)
                    if keyring is not None:
                        signature.cms_verify(newsig, keyring)
                else:
                    newbundle = open_bundle(tmp, keyring=keyring, verify=keyring is not None)
                if newbundle.format != inbundle.format:
                    raise BundleError(f"new signature is for a '{newbundle.format}' bundle, "
                                      f"not '{inbundle.format}'")
                if newbundle.manifest.verity_hash != inbundle.manifest.verity_hash:
                    raise BundleError("new signature does not match the bundle payload")
            except RaucError as e:
                raise e.prefixed("failed to verify the new bundle: ") from e
    except RaucError as e:
        raise e.prefixed("Failed to replace signature: ") from e


def encrypt_bundle(
    inbundle: Bundle,
    outpath: Path | str,
    recipients: Sequence[x509.Certificate],
    *,
    use_ski: bool = False,
    ec_layout: envelope.EcLayout = envelope.EcLayout.SHARED_KEY,
    out: Log = _no_out,
    progress: Progress | None = None,
) -> None:
    """Wrap the signed CMS of a verified crypt bundle in EnvelopedData for ``recipients``.

    ``ec_layout``: one ephemeral EC key per curve (default) or, as RAUC, one per recipient.
    """
    outpath = Path(outpath)
    try:
        if inbundle.format != "crypt":
            raise BundleError("Refused to encrypt input bundle that is not in 'crypt' format.")
        if not recipients:
            raise BundleError("One or multiple recipient certificates must be provided (via --to)")
        with _new_output(outpath) as tmp:
            _copy_range(inbundle.path, tmp, inbundle.size)
            try:
                env = envelope.encrypt(inbundle.sigdata, recipients, use_ski=use_ski, ec_layout=ec_layout,
                                       progress=progress)
            except EnvelopeError as e:
                raise e.prefixed("Failed to encrypt bundle: ") from e
            _append_signature(tmp, env)
        n = len(recipients)
        logger.info(f"Encrypted for {n} recipient{'s' if n != 1 else ''}")
    except RaucError as e:
        raise e.prefixed("Failed to create bundle: ") from e


def replace_manifest(manifest: Manifest, **changes: Any) -> Manifest:
    """A copy of ``manifest`` with ``changes`` applied (for tests and tools)."""
    return dataclasses.replace(manifest, **changes)
