"""squashfs images of bundle contents, through squashfs-tools (mksquashfs, unsquashfs).

RAUC builds its payload with ``mksquashfs <dir> <out> -noappend -no-progress -all-root -no-xattrs
-quiet`` plus the user's ``--mksquashfs-args``; this module does the same and extracts images or
single files from a squashfs that may sit at the start of a larger file (a bundle).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from pyrauc import shellwords
from pyrauc.errors import BundleError


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BundleError(f"{name} not found: install squashfs-tools")
    return path


def _call(argv: Sequence[str], pass_fds: Sequence[int] = ()) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True, check=False,
                          pass_fds=tuple(pass_fds))


def _said(proc: subprocess.CompletedProcess[bytes]) -> list[str]:
    """The lines of the tool's output (stderr, else stdout), without leading and trailing blank space."""
    return (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()


def _run(argv: Sequence[str], what: str, pass_fds: Sequence[int] = ()) -> subprocess.CompletedProcess[bytes]:
    proc = _call(argv, pass_fds)
    if proc.returncode != 0:
        said = _said(proc)
        raise BundleError(f"{what} failed: {said[-1] if said else f'exit code {proc.returncode}'}")
    return proc


def mksquashfs(workdir: Path, output: Path, extra_args: str | None = None, keep_metadata: bool = False,
               *, append: bool = False) -> None:
    """Create a squashfs image of ``workdir`` at ``output`` with RAUC's options.

    ``append`` adds the files of ``workdir`` to the squashfs at ``output`` instead (no recovery file).
    """
    argv = [_tool("mksquashfs"), str(workdir), str(output), "-no-recovery" if append else "-noappend",
            "-no-progress"]
    if not keep_metadata:
        argv += ["-all-root", "-no-xattrs"]
    argv.append("-quiet")
    if extra_args:
        try:
            argv += shellwords.split(extra_args)
        except shellwords.ShellSplitError as e:
            raise BundleError(f"Failed to parse mksquashfs extra args: {e}") from None
    proc = _call(argv)
    if proc.returncode != 0:
        # RAUC's words, then what mksquashfs said first (RAUC lets all its output through, a usage
        # text for a bad option; one line says what is wrong)
        first = next((line.strip() for line in _said(proc) if line.strip()), "")
        raise BundleError(f"Failed to run mksquashfs: {_exit_text(proc.returncode)}" + (f" ({first})" if first else ""))


def _exit_text(returncode: int) -> str:
    """GLib's words for how a child process ended."""
    if returncode < 0:
        return f"Child process killed by signal {-returncode}"
    return f"Child process exited with code {returncode}"


def squashfs_size(path: Path, offset: int = 0) -> int:
    """``bytes_used`` from the superblock of the squashfs at ``offset`` of ``path``."""
    with open(path, "rb") as f:
        f.seek(offset)
        sb = f.read(96)
    if len(sb) < 96 or sb[:4] != b"hsqs":
        raise BundleError(f"no squashfs found in {path}")
    return int.from_bytes(sb[40:48], "little")


def unsquashfs(image: Path | str | int, dest: Path, offset: int = 0) -> None:
    """Extract the squashfs at ``offset`` of ``image`` (a path, or an open file descriptor, which
    unsquashfs reads as /dev/fd/N) into the new directory ``dest``."""
    argv = [_tool("unsquashfs"), "-no-progress", "-d", str(dest)]
    if offset:
        argv += ["-o", str(offset)]
    if isinstance(image, int):
        _run([*argv, f"/dev/fd/{image}"], "unsquashfs", pass_fds=(image,))
    else:
        _run([*argv, os.fspath(image)], "unsquashfs")


def cat_file(image: Path | str, name: str, offset: int = 0) -> bytes:
    """Return the content of the file ``name`` in the squashfs at ``offset`` of ``image``."""
    argv = [_tool("unsquashfs"), "-no-progress"]
    if offset:
        argv += ["-o", str(offset)]
    proc = _run([*argv, "-cat", os.fspath(image), name], f"reading {name} from bundle")
    return proc.stdout
