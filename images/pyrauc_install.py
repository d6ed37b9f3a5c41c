"""Stage (b): pyrauc from the working tree, installed into a virtualenv at /opt/pyrauc in the rootfs.

Three cached pieces keep a pyrauc-only change cheap:

* wheels: the runtime dependencies from pyproject.toml, downloaded on the HOST as cp311
  manylinux wheels (bookworm's python3-cryptography is too old), keyed by the requirement list;
* pydeps: /opt/pyrauc as a venv created by the target's python3 in a chroot with those wheels
  installed offline, keyed by rootfs + wheels;
* the pyrauc wheel itself, built here from pyproject.toml + pyrauc/ (pure Python, fixed
  timestamps) and installed with the venv's pip into a hard-linked copy of the rootfs, together
  with the D-Bus service files of pyrauc/data (:data:`SERVICE_FILES`: policy, activation file,
  rauc-service.sh, the Type=dbus rauc.service unit and the interface XML), so that ``rauc
  install`` on the target goes through the bus-activated ``rauc service``.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import sys
import tomllib
import zipfile
from pathlib import Path

from .common import REPO, SOURCE_DATE_EPOCH, Hasher, cached, prune, run, stage

VENV = "/opt/pyrauc"
DATA = REPO / "pyrauc" / "data"
#: pyrauc/data file -> (path in the rootfs, mode)
SERVICE_FILES: dict[str, tuple[str, int]] = {
    "de.pengutronix.rauc.conf": ("usr/share/dbus-1/system.d/de.pengutronix.rauc.conf", 0o644),
    "de.pengutronix.rauc.service": ("usr/share/dbus-1/system-services/de.pengutronix.rauc.service", 0o644),
    "rauc-service.sh": ("usr/local/libexec/rauc-service.sh", 0o755),
    "rauc.service": ("etc/systemd/system/rauc.service", 0o644),
    "de.pengutronix.rauc.Installer.xml": ("usr/share/dbus-1/interfaces/de.pengutronix.rauc.Installer.xml", 0o644),
}
TARGET_PYTHON = "3.11"        # bookworm's python3
PLATFORMS = ["manylinux_2_34_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64"]  # bookworm has glibc 2.36


def project() -> dict[str, object]:
    """The [project] table of the working tree's pyproject.toml."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    proj: dict[str, object] = data["project"]
    return proj


def requirements() -> list[str]:
    """Runtime dependencies plus the ``pkcs11`` extra (decryption keys in a token on the device)."""
    deps = project().get("dependencies", [])
    extras = project().get("optional-dependencies", {})
    assert isinstance(deps, list) and isinstance(extras, dict)
    return [str(d) for d in [*deps, *extras.get("pkcs11", [])]]


def download_wheels(cache: Path, force: bool = False) -> tuple[Path, str]:
    """pip download (on the host) the cp311 manylinux wheels of pyrauc's runtime dependencies."""
    reqs = requirements()
    key = Hasher("wheels").text(TARGET_PYTHON, *PLATFORMS, *reqs).hexdigest()
    final = cache / "wheels" / f"wheels-{key}"
    if not force and cached("wheels", final):
        return final, key
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with stage("wheels", f"pip download {' '.join(reqs)} for cp{TARGET_PYTHON.replace('.', '')}"):
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(tmp),
               "--python-version", TARGET_PYTHON, "--implementation", "cp",
               "--abi", "cp" + TARGET_PYTHON.replace(".", ""), "--abi", "abi3", "--abi", "none"]
        for p in PLATFORMS:
            cmd += ["--platform", p]
        run([*cmd, *reqs])
        (tmp / "requirements.txt").write_text("\n".join(reqs) + "\n")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    prune(final.parent, final)
    return final, key


def chroot_env() -> dict[str, str]:
    return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
            "PIP_NO_CACHE_DIR": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def build_pydeps(cache: Path, base: Path, base_key: str, wheels: Path, wheels_key: str,
                 force: bool = False) -> tuple[Path, str]:
    """The venv /opt/pyrauc with the dependency wheels installed (no pyrauc yet)."""
    key = Hasher("pydeps").text(base_key, wheels_key, VENV).hexdigest()
    final = cache / "pydeps" / f"venv-{key}"
    if not force and cached("pydeps", final):
        return final, key
    work = cache / "work" / f"pydeps-{key}"
    shutil.rmtree(work, ignore_errors=True)
    work.parent.mkdir(parents=True, exist_ok=True)
    with stage("pydeps", f"python3 -m venv {VENV} in chroot + offline pip install"):
        run(["cp", "-al", base, work])
        shutil.copytree(wheels, work / "tmp/wheels")
        env = chroot_env()
        run(["chroot", work, "python3", "-m", "venv", VENV], env=env)
        run(["chroot", work, f"{VENV}/bin/pip", "install", "-q", "--no-index", "--find-links", "/tmp/wheels",
             "-r", "/tmp/wheels/requirements.txt"], env=env)
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        (work / VENV.lstrip("/")).rename(tmp)
        run(["touch", "-h", "-d", f"@{SOURCE_DATE_EPOCH}", tmp])
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    shutil.rmtree(work, ignore_errors=True)
    prune(final.parent, final)
    return final, key


def source_key() -> str:
    """Content hash of what goes into the pyrauc wheel."""
    h = Hasher("pyrauc-src").file(REPO / "pyproject.toml")
    return h.tree(REPO / "pyrauc", ["**/*.py", "**/*.typed", "data/*"]).hexdigest()


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(dest_dir: Path) -> Path:
    """Build pyrauc's pure-Python wheel from the working tree (reproducible: fixed zip times)."""
    proj = project()
    name, version = str(proj["name"]), str(proj["version"])
    files: dict[str, bytes] = {}
    for p in sorted((REPO / "pyrauc").rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".typed"):
            files[str(p.relative_to(REPO))] = p.read_bytes()
    info = f"{name}-{version}.dist-info"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
            f"Requires-Python: {proj.get('requires-python', '')}"]
    meta += [f"Requires-Dist: {r}" for r in requirements()]
    files[f"{info}/METADATA"] = ("\n".join(meta) + "\n").encode()
    files[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: pyrauc-images\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n")
    scripts = proj.get("scripts", {})
    assert isinstance(scripts, dict)
    files[f"{info}/entry_points.txt"] = ("[console_scripts]\n" + "".join(
        f"{k} = {v}\n" for k, v in sorted(scripts.items()))).encode()
    record = [_record_line(n, d) for n, d in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    whl = dest_dir / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as z:
        for n, d in files.items():
            zi = zipfile.ZipInfo(n, date_time=(2023, 11, 14, 22, 13, 20))
            zi.external_attr = 0o644 << 16
            z.writestr(zi, d, zipfile.ZIP_DEFLATED)
    return whl


def install_pyrauc(root: Path, pydeps: Path) -> list[Path]:
    """Copy the dependency venv into ROOT and pip-install the pyrauc wheel into it (no byte-compiling)."""
    venv = root / VENV.lstrip("/")
    venv.parent.mkdir(parents=True, exist_ok=True)
    run(["cp", "-a", pydeps, venv])
    whl = build_wheel(root / "tmp")
    run(["chroot", root, f"{VENV}/bin/pip", "install", "-q", "--no-deps", "--no-index", "--no-compile",
         f"/tmp/{whl.name}"], env=chroot_env())
    whl.unlink()
    # hash-based pycs: reproducible and valid whatever the file times are
    run(["chroot", root, f"{VENV}/bin/python", "-m", "compileall", "-q", "--invalidation-mode",
         "checked-hash", f"{VENV}/lib/python{TARGET_PYTHON}/site-packages/pyrauc"], env=chroot_env())
    return [venv, *install_service_files(root)]


def install_service_files(root: Path) -> list[Path]:
    """The D-Bus policy, activation file, rauc-service.sh and rauc.service unit in ROOT."""
    written = []
    for name, (rel, mode) in SERVICE_FILES.items():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)          # the tree may hard-link the cached base rootfs
        dest.write_bytes((DATA / name).read_bytes())
        dest.chmod(mode)
        written.append(dest)
    return written
