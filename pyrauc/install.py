"""The installation pipeline (rauc.md section 5 "Install progress output", section 8).

:func:`install` runs RAUC's steps and reports them as ``"%3d%% <step>"`` lines through a callback:
determine slot states, check (open, decrypt, verify) the bundle, check the manifest (bundle
format, compatible or the install-check hook, version limit, manifest hash), determine the target
group, then for every image check the slot and copy the image. Before the first byte is written
all images are checked (readonly, type combination, size) and the target slots are marked bad
through the bootloader backend; afterwards the status file is updated and the installed slot is
marked active (when ``activate-installed``).

On any failure the open steps print ``"<step> failed."`` and an :class:`InstallError` carries the
reason (the CLI prints "LastError: <reason>"). The bundle is always unmounted and its loop/dm
devices removed; the booted slot is never touched and a target slot that was marked bad stays so.
"""

from __future__ import annotations

import os
import shlex
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyrauc import handlers, hooks, mount
from pyrauc.errors import InstallError, RaucError

if TYPE_CHECKING:
    from pyrauc.bundle import Bundle
    from pyrauc.config import SystemConfig
    from pyrauc.context import Context
    from pyrauc.slots import Slot

ProgressLine = Callable[[str], None]


def _no_log(msg: str) -> None:
    """Discard diagnostics."""


class Steps:
    """RAUC's nested progress steps: ``"%3d%% <name>"``, ``"<name> done."`` / ``"<name> failed."``."""

    def __init__(self, emit: ProgressLine) -> None:
        self.emit = emit
        self.percent = 0
        self.stack: list[tuple[str, int]] = []   # (name, percent at which it ends)

    def begin(self, name: str, end: int) -> None:
        self.stack.append((name, end))
        self.emit(f"{self.percent:3d}% {name}")

    def done(self) -> None:
        name, end = self.stack.pop()
        self.percent = max(self.percent, end)
        self.emit(f"{self.percent:3d}% {name} done.")

    def set_percent(self, percent: int) -> None:
        self.percent = max(self.percent, min(100, percent))

    def fail_all(self) -> None:
        while self.stack:
            name, _end = self.stack.pop()
            self.emit(f"{self.percent:3d}% {name} failed.")


@dataclass
class InstallArgs:
    """Options of one installation (``rauc install`` flags)."""

    ignore_compatible: bool = False
    ignore_version_limit: bool = False
    override_boot_slot: str | None = None
    transaction_id: str | None = None
    require_manifest_hash: str | None = None
    handler_args: str | None = None
    keyring_path: str | None = None
    mountprefix: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _version_tuple(version: str) -> tuple[tuple[int, int, int], str | None]:
    core, _, pre = version.partition("-")
    core = core.partition("+")[0]
    parts = [int(p) for p in core.split(".")] + [0, 0]
    return (parts[0], parts[1], parts[2]), pre or None


def version_at_least(have: str, want: str) -> bool:
    """Semantic version comparison as used for min-bundle-version (pre-releases sort lower)."""
    try:
        (hv, hpre), (wv, wpre) = _version_tuple(have), _version_tuple(want)
    except (ValueError, IndexError):
        return False
    if hv != wv:
        return hv > wv
    if hpre is None or wpre is None:
        return hpre is None or wpre is not None
    return hpre >= wpre


def slot_info(slot: Slot) -> handlers.SlotInfo:
    """The handler view of a :class:`pyrauc.slots.Slot`."""
    sc = slot.config
    root = slot.root
    return handlers.SlotInfo(
        name=slot.name, sclass=slot.sclass, device=slot.device, type=slot.type,
        bootname=root.bootname if slot.parent is not None else slot.bootname,
        parent=slot.parent.name if slot.parent is not None else None, state=slot.state,
        readonly=slot.readonly, install_same=sc.install_same, extra_mkfs_opts=list(sc.extra_mkfs_opts),
        extra_mount_opts=sc.extra_mount_opts, resize=sc.resize, region_start=sc.region_start,
        region_size=sc.region_size)


def _system_env(config: SystemConfig, system_info: dict[str, str], variant: str | None) -> dict[str, str]:
    env = {"RAUC_SYSTEM_CONFIG": os.fspath(config.path) if config.path else "",
           "RAUC_SYSTEM_COMPATIBLE": config.compatible,
           "RAUC_SYSTEM_VARIANT": variant or ""}
    if "RAUC_SYSTEM_VERSION" in system_info:
        env["RAUC_SYSTEM_VERSION"] = system_info["RAUC_SYSTEM_VERSION"]
    return hooks.merge_env(env, system_info)


def _select_images(bundle: Bundle, variant: str | None) -> list[Any]:
    """One image per slot class: the variant-specific one if it exists, else the default."""
    chosen: dict[str, Any] = {}
    for image in bundle.manifest.images:
        if image.artifact is not None:
            raise InstallError(f"Artifact images ({image.group}) are not supported by pyrauc")
        if image.variant is not None and image.variant != variant:
            continue
        if image.variant is None and image.slotclass in chosen:
            continue
        chosen[image.slotclass] = image
    return list(chosen.values())


def install(bundle_path: str | os.PathLike[str], *, config: SystemConfig, ignore_compatible: bool = False,
            ignore_version_limit: bool = False, override_boot_slot: str | None = None,
            transaction_id: str | None = None, require_manifest_hash: str | None = None,
            handler_args: str | None = None, keyring_path: str | None = None,
            mountprefix: str | None = None, progress: ProgressLine = print, log: ProgressLine = _no_log,
            context: Context | None = None) -> None:
    """Install the bundle at ``bundle_path``; InstallError (one line) on failure.

    ``context`` (optional) is a prepared :class:`pyrauc.context.Context` (tests inject backends);
    otherwise it is created from ``config`` and ``override_boot_slot``.
    """
    args = InstallArgs(ignore_compatible=ignore_compatible, ignore_version_limit=ignore_version_limit,
                       override_boot_slot=override_boot_slot, transaction_id=transaction_id,
                       require_manifest_hash=require_manifest_hash, handler_args=handler_args,
                       keyring_path=keyring_path, mountprefix=mountprefix)
    steps = Steps(progress)
    steps.begin("Installing", 100)
    try:
        _Installation(Path(bundle_path), config, args, steps, log, context).run()
    except RaucError as exc:
        steps.fail_all()
        if isinstance(exc, InstallError):
            raise
        raise InstallError(str(exc)) from exc
    except BaseException:
        steps.fail_all()
        raise
    steps.done()


class _Installation:
    """State of one run of the pipeline."""

    def __init__(self, path: Path, config: SystemConfig, args: InstallArgs, steps: Steps,
                 log: ProgressLine, context: Context | None) -> None:
        self.path = path
        self.context = context
        self.config = config
        self.args = args
        self.steps = steps
        self.log = log
        self.mountprefix = (args.mountprefix or config.mountprefix or mount.DEFAULT_MOUNT_PREFIX).rstrip("/") \
            or "/"
        self.transaction = args.transaction_id or str(uuid.uuid4())

    # -- steps ---------------------------------------------------------------------------------
    def run(self) -> None:
        from pyrauc.context import create_context
        steps = self.steps
        steps.begin("Determining slot states", 20)
        ctx = self.context or create_context(self.config, override_boot_slot=self.args.override_boot_slot,
                                             mountprefix=self.mountprefix)
        self.ctx = ctx
        self.slots = ctx.slots
        self.booted = ctx.booted
        steps.done()

        steps.begin("Checking bundle", 40)
        steps.begin("Verifying signature", 40)
        bundle = self._open_bundle()
        steps.done()
        steps.done()

        with mount.mount_bundle(bundle, self.mountprefix) as bundle_mount:
            self._install_mounted(bundle, bundle_mount)

    def _open_bundle(self) -> Bundle:
        from pyrauc.bundle import open_bundle
        from pyrauc.signature import Keyring
        config = self.config
        keyring = config.to_keyring()
        if self.args.keyring_path is not None:
            keyring = Keyring(path=Path(self.args.keyring_path)) if keyring is None else \
                _replace_keyring_path(keyring, Path(self.args.keyring_path))
        return open_bundle(self.path, keyring=keyring, verify=True, key=config.encryption.key,
                           cert=config.encryption.cert, allowed_formats=config.bundle_formats,
                           max_signature_size=config.max_bundle_signature_size, log=self.log)

    def _check_manifest(self, bundle: Bundle) -> None:
        mf = bundle.manifest
        want = self.args.require_manifest_hash
        if want is not None and mf.hash().lower() != want.lower():
            raise InstallError(f"Manifest hash mismatch: Expected '{want}' but bundle manifest has "
                               f"'{mf.hash()}'")
        if not mf.images:
            raise InstallError("Manifest contains no images")
        limit = self.config.min_bundle_version
        if limit and not self.args.ignore_version_limit:
            if not mf.version or not version_at_least(mf.version, limit):
                raise InstallError(f"Version mismatch: Expected at least '{limit}' but bundle manifest "
                                   f"has '{mf.version or ''}'")

    def _check_compatible(self, bundle: Bundle) -> None:
        mf = bundle.manifest
        if self.args.ignore_compatible:
            return
        if mf.compatible != self.config.compatible:
            raise InstallError(f"Compatible mismatch: Expected '{self.config.compatible}' but bundle "
                               f"manifest has '{mf.compatible}'")

    def _install_mounted(self, bundle: Bundle, bundle_mount: Path) -> None:
        config, steps, mf = self.config, self.steps, bundle.manifest
        system_info = dict(self.ctx.system_info)
        base_env = _system_env(config, system_info, self.ctx.variant)
        base_env.update(hooks.manifest_env(mf))
        base_env["RAUC_MOUNT_PREFIX"] = self.mountprefix
        if bundle.verified is not None:
            base_env["RAUC_BUNDLE_SPKI_HASHES"] = hooks.spki_hashes(bundle.verified.chain)

        steps.begin("Checking manifest contents", 60)
        self._check_manifest(bundle)
        # install-check replaces the compatible check (RAUC semantics)
        if "install-check" in mf.hooks:
            if not mf.hook_name:
                raise InstallError("install-check hook requested but the manifest has no hook file")
            env = {**base_env, "RAUC_BUNDLE_MOUNT_POINT": os.fspath(bundle_mount)}
            hooks.run_hook(hooks.hook_path(bundle_mount, mf.hook_name), "install-check", env)
        else:
            self._check_compatible(bundle)
        steps.done()

        steps.begin("Determining target install group", 80)
        from pyrauc import slots as slots_mod
        group_error: RaucError | None = None
        try:
            targets = slots_mod.determine_target_group(self.slots)
        except RaucError as exc:
            targets, group_error = {}, exc
        variant = self.ctx.variant
        jobs: list[tuple[handlers.ImageJob, Slot]] = []
        for image in _select_images(bundle, variant):
            slot = targets.get(image.slotclass)
            if slot is None:
                readonly = [s.name for s in self.slots.values() if s.sclass == image.slotclass
                            and s.readonly and not s.is_active]
                if readonly:
                    raise InstallError(f"Reject writing to readonly slot {readonly[0]}")
                if group_error is not None:
                    raise group_error
                raise InstallError(f"No target slot for image class '{image.slotclass}' found")
            if slot is self.booted or slot.is_active:
                raise InstallError(f"Refusing to write to active slot {slot.name}")
            if slot.mount_point is not None and not slot.config.allow_mounted:
                raise InstallError(f"Destination device '{slot.device}' already mounted")
            path = bundle_mount / image.filename if image.filename else bundle_mount
            jobs.append((handlers.ImageJob(image=image, path=path, slot=slot_info(slot),
                                           verified_by_dm=bundle.format in ("verity", "crypt")), slot))
        steps.done()

        henv = handlers.HandlerEnv(mountprefix=self.mountprefix, bundle_mount=bundle_mount,
                                   hook_name=mf.hook_name, base_env=base_env)
        sys_env = handlers.handler_env(
            base={**base_env, "RAUC_CURRENT_BOOTNAME": (self.booted.bootname or "") if self.booted else "",
                  "RAUC_BUNDLE_MOUNT_POINT": os.fspath(bundle_mount),
                  "RAUC_UPDATE_SOURCE": os.fspath(bundle_mount),
                  "RAUC_TRANSACTION_ID": self.transaction},
            slots=[slot_info(s) for s in self.slots.values()],
            targets={job.slot.name: job for job, _s in jobs})

        if mf.handler_name:
            self._run_custom_handler(bundle, bundle_mount, sys_env)
            return

        # everything that can be checked before writing is checked now
        methods: dict[str, str] = {}
        for job, slot in jobs:
            if self._skip(job, slot):
                continue
            methods[slot.name] = handlers.precheck(job)

        if config.handlers.pre_install:
            hooks.run_handler(config.handlers.pre_install, sys_env, what="Pre-install handler")

        steps.begin("Updating slots", 100)
        backend = self.ctx.backend
        marked: set[str] = set()
        span = 20 // max(1, len(jobs))
        for n, (job, slot) in enumerate(jobs):
            start = 80 + n * span
            steps.set_percent(start)
            steps.begin(f"Checking slot {slot.name}", start + span // 2)
            skip = self._skip(job, slot)
            steps.done()
            if skip:
                self.log(f"Skipping update for correct image {job.image.filename}")
                steps.begin("Copying image skipped", start + span)
                steps.done()
                continue
            boot_slot = slot.root
            if boot_slot.bootname is not None and boot_slot.name not in marked:
                self.log(f"Marking target slot {boot_slot.name} as bad")
                _call_backend(backend, "set_state", boot_slot, False)
                marked.add(boot_slot.name)
            steps.begin(f"Copying image to {slot.name}", start + span)
            self._mark_status(slot, "pending")
            try:
                handlers.install_image(job, henv, method=methods.get(slot.name))
            except RaucError:
                self._mark_status(slot, "failed", quiet=True)
                raise
            self._record_installed(bundle, job, slot)
            steps.done()
        steps.set_percent(100)
        steps.done()

        if config.handlers.post_install:
            hooks.run_handler(config.handlers.post_install, sys_env, what="Post-install handler")

        if config.activate_installed:
            roots = {s.root.name: s.root for _j, s in jobs if s.root.bootname is not None}
            for root in roots.values():
                self.log(f"Marking target slot {root.name} as active")
                _call_backend(backend, "set_primary", root)
                from pyrauc import status
                status.record_activated(config, root)
        else:
            self.log("Leaving target slot non-active (activate-installed=false)")

    def _run_custom_handler(self, bundle: Bundle, bundle_mount: Path, env: dict[str, str]) -> None:
        """[handler] filename: the bundle's own handler replaces the whole slot update."""
        mf = bundle.manifest
        assert mf.handler_name is not None
        args = shlex.split(mf.handler_args or "") + shlex.split(self.args.handler_args or "")
        self.steps.begin("Launching update handler", 100)
        hooks.run_handler(bundle_mount / mf.handler_name, env, args, what="Handler")
        self.steps.done()

    # -- helpers -------------------------------------------------------------------------------
    def _skip(self, job: handlers.ImageJob, slot: Slot) -> bool:
        if job.slot.install_same:
            return False
        from pyrauc import status
        try:
            st = status.load_slot_status(self.config, slot)
        except RaucError:
            return False
        return handlers.should_skip(job, st.checksum_sha256)

    def _mark_status(self, slot: Slot, value: str, quiet: bool = False) -> None:
        from pyrauc import status

        def change(st: Any) -> None:
            st.status = value
        try:
            status.update_slot_status(self.config, slot, change)
        except RaucError:
            if not quiet and self.config.central_status:
                raise

    def _record_installed(self, bundle: Bundle, job: handlers.ImageJob, slot: Slot) -> None:
        from pyrauc import status
        mf = bundle.manifest

        def change(st: Any) -> None:
            st.bundle_compatible = mf.compatible
            st.bundle_version = mf.version
            st.bundle_description = mf.description
            st.bundle_build = mf.build
            st.bundle_hash = mf.hash()
            st.status = "ok"
            st.checksum_sha256 = job.image.sha256
            st.checksum_size = job.image.size
            st.installed_transaction = self.transaction
            st.installed_timestamp = status.timestamp()
            st.installed_count += 1
        try:
            status.update_slot_status(self.config, slot, change)
        except RaucError as exc:
            if self.config.central_status:
                raise
            self.log(f"Failed to save status of slot {slot.name}: {exc}")


def _replace_keyring_path(keyring: Any, path: Path) -> Any:
    import dataclasses
    return dataclasses.replace(keyring, path=path, directory=None)


def _call_backend(backend: Any, method: str, slot: Slot, *args: Any) -> None:
    try:
        getattr(backend, method)(slot, *args)
    except RaucError as exc:
        what = "mark slot bad" if method == "set_state" else "mark slot active"
        raise InstallError(f"Failed to {what}: {exc}") from exc


def run_cli_install(bundle: str, *, config: SystemConfig, emit: ProgressLine, err: ProgressLine,
                    **kwargs: Any) -> int:
    """Run :func:`install` with RAUC's client output; return the exit code (0/1)."""
    try:
        install(bundle, config=config, progress=emit, **kwargs)
    except RaucError as exc:
        emit(f"LastError: {exc}")
        err(f"Installing `{bundle}` failed")
        return 1
    emit(f"Installing `{bundle}` succeeded")
    return 0


__all__: Sequence[str] = ("InstallArgs", "Steps", "install", "run_cli_install", "slot_info",
                          "version_at_least")
