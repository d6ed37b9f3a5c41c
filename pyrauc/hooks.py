"""Bundle hooks, slot hooks and system handlers (RAUC's src/install.c and src/update_handler.c).

* Bundle hook ``<hook> install-check`` runs from the mounted bundle before anything is written;
  exit code 10 rejects the bundle with the last stderr line as reason ("Hook returned: '<reason>'"),
  any other non-zero code fails ("Hook returned with exit code N: <stderr>").
* Slot hooks ``<hook> slot-pre-install|slot-install|slot-post-install`` get RAUC_SLOT_* and
  RAUC_IMAGE_* variables.
* System handlers ([handlers] pre-install / post-install) and the system-info handler (whose
  ``RAUC_xxx=value`` output lines extend the environment without overriding existing keys).

Hooks inherit the caller's environment plus the RAUC_* variables built here.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pyrauc.errors import InstallError, InstallRejected

HOOK_REJECTED = 10
_ENV_KEY = re.compile(r"^[A-Z0-9_]+$")


class HookError(InstallError):
    """A hook or handler failed or rejected the installation."""


class HookRejected(HookError, InstallRejected):
    """The install-check hook rejected the bundle (exit code 10)."""


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _run(argv: Sequence[str], env: Mapping[str, str], cwd: str | os.PathLike[str] | None,
         capture_stdout: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; stderr is read (the reason of a failure), stdout read or, as RAUC runs a hook,
    passed through to this process's stdout (the terminal, or the service's journal)."""
    full_env = {**os.environ, **env}
    if not capture_stdout:
        sys.stdout.flush()      # what this process printed comes first
    try:
        return subprocess.run(list(argv), env=full_env, cwd=cwd, text=True, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE if capture_stdout else None, stderr=subprocess.PIPE,
                              check=False)
    except OSError as exc:
        raise HookError(f"Failed to start {argv[0]}: {exc.strerror}") from exc


def run_hook(hook: str | os.PathLike[str], action: str, env: Mapping[str, str], *,
             cwd: str | os.PathLike[str] | None = None) -> None:
    """Run ``<hook> <action>``, its stdout passed through as RAUC does. HookError on rejection
    (exit code 10, the last line on stderr as the reason) or failure."""
    proc = _run([os.fspath(hook), action], env, cwd, capture_stdout=False)
    if proc.returncode == 0:
        return
    reason = _last_line(proc.stderr)
    if proc.returncode == HOOK_REJECTED:
        raise HookRejected(f"Hook returned: '{reason}'")
    if proc.returncode < 0:
        raise HookError(f"Hook killed by signal {-proc.returncode}")
    raise HookError(f"Hook returned with exit code {proc.returncode}: {reason}".rstrip(": "))


def run_handler(handler: str | os.PathLike[str], env: Mapping[str, str], args: Sequence[str] = (),
                what: str = "Handler") -> str:
    """Run a system handler (pre-install, post-install, custom update handler); return stdout."""
    proc = _run([os.fspath(handler), *args], env, None)
    if proc.returncode != 0:
        reason = _last_line(proc.stderr) or f"exit code {proc.returncode}"
        raise HookError(f"{what} error: {reason}")
    return proc.stdout


def parse_system_info(output: str) -> dict[str, str]:
    """The ``RAUC_xxx=value`` lines of a system-info handler's output."""
    result: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        key = key.strip()
        if sep and key.startswith("RAUC_") and _ENV_KEY.match(key):
            result[key] = value
    return result


def run_system_info(handler: str | os.PathLike[str], env: Mapping[str, str]) -> dict[str, str]:
    """Run the [handlers] system-info handler and return the variables it printed."""
    return parse_system_info(run_handler(handler, env, what="System-info handler"))


def merge_env(env: dict[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """Add ``extra`` to ``env`` without overriding existing keys (system-info semantics)."""
    for key, value in extra.items():
        env.setdefault(key, value)
    return env


def env_key(text: str) -> str | None:
    """``text`` as an environment key fragment: upper case, '-' and '.' -> '_'; None if invalid."""
    key = text.upper().replace("-", "_").replace(".", "_")
    return key if _ENV_KEY.match(key) else None


def manifest_env(manifest: Any) -> dict[str, str]:
    """RAUC_MF_* and RAUC_META_<LABEL>_<KEY> for a :class:`pyrauc.manifest.Manifest`."""
    env = {"RAUC_MF_COMPATIBLE": manifest.compatible or "",
           "RAUC_MF_VERSION": manifest.version or "",
           "RAUC_MF_DESCRIPTION": manifest.description or "",
           "RAUC_MF_BUILD": manifest.build or ""}
    meta: Mapping[str, Mapping[str, str]] = getattr(manifest, "meta", {}) or {}
    for label, values in meta.items():
        label_key = env_key(label)
        if label_key is None:
            continue
        for key, value in values.items():
            k = env_key(key)
            if k is not None:
                env[f"RAUC_META_{label_key}_{k}"] = value
    return env


def spki_hash(cert: x509.Certificate) -> str:
    """sha256 of the certificate's SubjectPublicKeyInfo as colon-separated upper-case hex."""
    der = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def spki_hashes(chain: Iterable[x509.Certificate]) -> str:
    """RAUC_BUNDLE_SPKI_HASHES: the SPKI hashes of the signer chain, space separated."""
    return " ".join(spki_hash(c) for c in chain)


def slot_env(*, name: str, sclass: str, slot_type: str, device: str, state: str,
             bootname: str | None, parent: str | None, mount_point: str | os.PathLike[str] | None = None
             ) -> dict[str, str]:
    """RAUC_SLOT_* of one slot (hook form, no index)."""
    env = {"RAUC_SLOT_NAME": name, "RAUC_SLOT_STATE": state, "RAUC_SLOT_CLASS": sclass,
           "RAUC_SLOT_TYPE": slot_type, "RAUC_SLOT_DEVICE": device,
           "RAUC_SLOT_BOOTNAME": bootname or "", "RAUC_SLOT_PARENT": parent or ""}
    if mount_point is not None:
        env["RAUC_SLOT_MOUNT_POINT"] = os.fspath(mount_point)
    return env


def image_env(*, path: str | os.PathLike[str], size: int | None, digest: str | None, sclass: str
              ) -> dict[str, str]:
    """RAUC_IMAGE_* of one image (hook form, no index)."""
    return {"RAUC_IMAGE_NAME": os.fspath(path), "RAUC_IMAGE_SIZE": str(size or 0),
            "RAUC_IMAGE_DIGEST": digest or "", "RAUC_IMAGE_CLASS": sclass}


def bundle_file(bundle_mount: str | os.PathLike[str], name: str, what: str = "Hook") -> Path:
    """The file ``name`` of the mounted bundle, which must resolve to a place inside the bundle.

    Defence in depth: a signed manifest names hooks, handlers and images relative to the bundle
    root; a name with "../" or a symlink in the payload pointing outside must not make install
    read or run a file of the target instead (InstallError).
    """
    root = Path(os.path.realpath(bundle_mount))
    path = Path(bundle_mount) / name
    resolved = Path(os.path.realpath(path))
    if os.path.isabs(name) or not resolved.is_relative_to(root) or resolved == root:
        raise InstallError(f"{what} file '{name}' points outside the bundle")
    return path


def hook_path(bundle_mount: str | os.PathLike[str], hook_name: str) -> Path:
    """The hook executable inside the mounted bundle."""
    return bundle_file(bundle_mount, hook_name)
