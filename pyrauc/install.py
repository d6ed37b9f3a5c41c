"""The installation (RAUC's src/install.c).

:func:`install` runs RAUC's steps and reports them as ``"%3d%% <step>"`` lines through a callback
(the step names and percentages of RAUC's install progress):

1. determine slot states (:func:`pyrauc.context.create_context`);
2. check the bundle: open, decrypt and verify it (:func:`pyrauc.bundle.open_bundle`), then mount it
   (:func:`pyrauc.mount.mount_bundle`);
3. check the manifest contents: manifest hash, images, version limit, and the compatible (or the
   bundle's install-check hook instead);
4. determine the target install group and plan one job per image (:mod:`pyrauc.slots`);
5. pre-check every job before the first byte is written: readonly, image type x slot type, size
   (:func:`pyrauc.handlers.precheck`);
6. update the slots: mark every target slot bad (:mod:`pyrauc.mark`) before the first image is
   written, then write each image
   (:func:`pyrauc.handlers.install_image`) and record the slot status (:mod:`pyrauc.status`);
7. activate: mark the installed slots active (``activate-installed``).

A bundle with its own update handler (``[handler]``) replaces steps 5 to 7. On any failure the open
steps print ``"<step> failed."`` and an :class:`InstallError` carries the reason (the CLI prints
"LastError: <reason>"). The bundle is always unmounted and its loop/dm devices removed; the booted
slot is never touched and a target slot that was marked bad stays so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyrauc import eventlog, handlers, hooks, mark, mount, semver, shellwords, status, testpoints
from pyrauc.access import BundleAccess, is_url
from pyrauc.bundle import Bundle, check_payload
from pyrauc.config import SystemConfig
from pyrauc.context import Context, create_context
from pyrauc.errors import InstallError, InstallRejected, RaucError
from pyrauc.eventlog import EventLog
from pyrauc.manifest import Image
from pyrauc.slots import Slot, determine_target_group
from pyrauc.status import SlotStatus
from pyrauc.stream import StreamOptions

ProgressLine = Callable[[str], None]
#: (percentage, message, nesting depth): one change of RAUC's progress (the service's Progress)
ProgressStep = Callable[[int, str, int], None]


logger = logging.getLogger(__name__)


class Steps:
    """RAUC's nested progress steps: ``"%3d%% <name>"``, ``"<name> done."`` / ``"<name> failed."``.

    Percentages are current RAUC's (>= 1.10): "Installing" is 10 units (slot states, bundle,
    manifest and target group 1 each, "Updating slots" 6), each image 1 part to check and 9 to
    copy of ``10 x images`` parts of "Updating slots"; the copy reports in between; only the
    root step reaches 100 (the others stop at 99, as since RAUC 1.7).
    """

    def __init__(self, emit: ProgressLine, on_step: ProgressStep | None = None) -> None:
        self.emit = emit
        self.on_step = on_step
        self.percent = 0
        self.stack: list[tuple[str, int]] = []   # (name, percent at which it ends)

    def _report(self, message: str, depth: int) -> None:
        shown = self.percent if depth <= 1 else min(99, self.percent)
        self.emit(f"{shown:3d}% {message}")
        if self.on_step is not None:
            self.on_step(shown, message, depth)

    def begin(self, name: str, end: int) -> None:
        self.stack.append((name, end))
        self._report(name, len(self.stack))

    def done(self) -> None:
        depth = len(self.stack)
        name, end = self.stack.pop()
        self.percent = max(self.percent, end)
        self._report(f"{name} done.", depth)

    def set_percent(self, percent: int) -> None:
        self.percent = max(self.percent, min(100, percent))

    def progress(self, start: int, end: int) -> Callable[[int, int], None]:
        """A (done, total) callback for the running step: one line whenever the percentage moves
        on between ``start`` and ``end``, under the step's name."""
        name, depth = self.stack[-1][0], len(self.stack)

        def report(done: int, total: int) -> None:
            percent = start + (end - start) * done // total if total else start
            if self.percent < percent < end:
                self.percent = percent
                self._report(name, depth)
        return report

    def fail_all(self) -> None:
        """Each running step ends failed, at its end percentage as a finished one (as RAUC: a
        failed installation ends with "100% Installing failed.", Progress (100, ..., 1))."""
        while self.stack:
            depth = len(self.stack)
            name, end = self.stack.pop()
            self.percent = max(self.percent, end)
            self._report(f"{name} failed.", depth)


@dataclass(frozen=True)
class InstallArgs:
    """Options of one installation (the ``rauc install`` flags; RAUC's install args)."""

    ignore_compatible: bool = False
    ignore_version_limit: bool = False
    override_boot_slot: str | None = None
    transaction_id: str | None = None
    require_manifest_hash: str | None = None
    handler_args: str | None = None
    keyring_path: str | None = None
    mountprefix: str | None = None
    streaming: StreamOptions | None = None   # --tls-*, -H (None: system.conf's [streaming] only)


@dataclass
class _Plan:
    """One image, the slot it goes to and the handler method the pre-check chose (an install plan)."""

    job: handlers.ImageJob
    slot: Slot
    method: str | None = None     # None: skipped at the pre-check (or no pre-check yet)


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
        region_size=sc.region_size, size_limit=sc.size_limit)


def _system_env(config: SystemConfig, system_info: dict[str, str], variant: str | None) -> dict[str, str]:
    env = {"RAUC_SYSTEM_CONFIG": os.fspath(config.path) if config.path else "",
           "RAUC_SYSTEM_COMPATIBLE": config.compatible,
           "RAUC_SYSTEM_VARIANT": variant or ""}
    if "RAUC_SYSTEM_VERSION" in system_info:
        env["RAUC_SYSTEM_VERSION"] = system_info["RAUC_SYSTEM_VERSION"]
    return hooks.merge_env(env, system_info)


def _select_images(bundle: Bundle, variant: str | None) -> list[Image]:
    """One image per slot class: the variant-specific one if it exists, else the default."""
    chosen: dict[str, Image] = {}
    for image in bundle.manifest.images:
        if image.artifact is not None:
            raise InstallError(f"Artifact images ({image.group}) are not supported by pyrauc")
        if image.variant is not None and image.variant != variant:
            continue
        if image.variant is None and image.slotclass in chosen:
            continue
        chosen[image.slotclass] = image
    return list(chosen.values())


def install(bundle_path: str | os.PathLike[str], args: InstallArgs | None = None, *, config: SystemConfig,
            progress: ProgressLine = print, context: Context | None = None,
            on_step: ProgressStep | None = None, event_log: EventLog | None = None,
            notify: Callable[[str], None] | None = None) -> None:
    """Install the bundle at ``bundle_path`` with ``args``; InstallError (one line) on failure.

    ``notify`` receives RAUC's status messages of the installation ("Checking and mounting
    bundle...", "Updating slots...", "Checking slot X", "Updating slot X", "Updating slot X status",
    "Updating slot X done", "All slots updated"), which RAUC's service logs as "installing <bundle>:
    <message>".

    ``context`` (optional) is a prepared :class:`pyrauc.context.Context` (tests inject backends);
    otherwise it is created from ``config`` and ``args.override_boot_slot``. ``on_step`` receives
    every progress change as (percentage, message, depth), as RAUC's Progress property carries it.
    The installation is logged as install events in ``event_log`` (default: the context's, else
    system.conf's ``[log.*]``): "Installation <id> started", then succeeded, failed or rejected.
    """
    events = event_log or (context.event_log if context is not None else EventLog.from_config(config))
    steps = Steps(progress, on_step)
    run = _Installation(os.fspath(bundle_path), config, args or InstallArgs(), steps, context, events,
                        notify or (lambda _message: None))
    events.emit(eventlog.install_started(run.transaction))
    steps.begin("Installing", 100)
    try:
        run.run()
    except RaucError as exc:
        steps.fail_all()
        run.log_finished(exc)
        if isinstance(exc, InstallError):
            raise
        raise InstallError(str(exc)) from exc
    except BaseException as exc:
        steps.fail_all()
        run.log_finished(exc)
        raise
    steps.done()
    run.log_finished(None)


class _Installation:
    """State of one run of the pipeline."""

    def __init__(self, source: str, config: SystemConfig, args: InstallArgs, steps: Steps,
                 context: Context | None, events: EventLog, notify: Callable[[str], None]) -> None:
        self.notify = notify
        self.source_is_url = is_url(source)
        self.source: str | Path = source if self.source_is_url else Path(source)
        self.context = context
        self.events = events
        self.bundle: Bundle | None = None
        self.config = config
        self.args = args
        self.steps = steps
        self.mountprefix = (args.mountprefix or config.mountprefix or mount.DEFAULT_MOUNT_PREFIX).rstrip("/") \
            or "/"
        self.transaction = args.transaction_id or str(uuid.uuid4())

    # -- the steps -----------------------------------------------------------------------------
    def run(self) -> None:
        self.ctx = self._determine_slot_states()
        self.notify("Checking and mounting bundle...")
        with self._check_bundle() as bundle, contextlib.ExitStack() as mounted:
            try:
                bundle_mount = mounted.enter_context(mount.mount_bundle(bundle, self.mountprefix))
            except RaucError as exc:
                if self.source_is_url:   # RAUC sets up the NBD stack while checking the bundle
                    raise
                raise exc.prefixed("Failed mounting bundle: ") from exc
            try:
                self._install_mounted(bundle, bundle_mount)
            except RaucError as exc:
                # RAUC's layer for everything its install handler does with the mounted bundle
                # (rauc 1.8: "Installation error: Compatible mismatch: ...")
                raise exc.prefixed("Installation error: ") from exc

    def _install_mounted(self, bundle: Bundle, bundle_mount: Path) -> None:
        """Everything that needs the mounted bundle."""
        base_env = self._base_env(bundle)
        self._check_manifest_contents(bundle, bundle_mount, base_env)
        plans = self._plan_jobs(bundle, bundle_mount)
        system_env = self._system_handler_env(base_env, bundle_mount, plans)
        if bundle.manifest.handler_name:
            self._run_custom_handler(bundle, bundle_mount, system_env)
            return
        self._pre_check(plans)
        if self.config.handlers.pre_install:
            hooks.run_handler(self.config.handlers.pre_install, system_env, what="Pre-install handler")
        henv = handlers.HandlerEnv(mountprefix=self.mountprefix, bundle_mount=bundle_mount,
                                   hook_name=bundle.manifest.hook_name, base_env=base_env)
        self._update_slots(bundle, plans, henv)
        if self.config.handlers.post_install:
            hooks.run_handler(self.config.handlers.post_install, system_env, what="Post-install handler")
        self._activate(plans)

    def _determine_slot_states(self) -> Context:
        self.steps.begin("Determining slot states", 10)
        ctx = self.context or create_context(self.config, override_boot_slot=self.args.override_boot_slot,
                                             mountprefix=self.mountprefix, event_log=self.events)
        self.steps.done()
        return ctx

    def _check_bundle(self) -> Bundle:
        """Open, decrypt and verify the bundle."""
        self.steps.begin("Checking bundle", 20)
        self.steps.begin("Verifying signature", 20)
        access = BundleAccess.build(self.config, keyring=self.args.keyring_path, streaming=self.args.streaming)
        if self.source_is_url:
            access = access.with_info_headers(system_info=self.ctx.system_info, variant=self.ctx.variant,
                                              transaction_id=self.transaction)
        bundle = access.open(self.source)
        self.bundle = bundle
        if self.config.perform_pre_check and not bundle.detached and bundle.source is None:
            # the whole payload is authenticated before anything is mounted or written
            check_payload(bundle)
        testpoints.reach("checked-bundle")
        self.steps.done()
        self.steps.done()
        return bundle

    def _check_manifest_contents(self, bundle: Bundle, bundle_mount: Path, base_env: dict[str, str]) -> None:
        self.steps.begin("Checking manifest contents", 30)
        self._check_manifest(bundle)
        mf = bundle.manifest
        if "install-check" in mf.hooks:    # the bundle's install-check hook replaces the compatible check
            if not mf.hook_name:
                raise InstallError("install-check hook requested but the manifest has no hook file")
            env = {**base_env, "RAUC_BUNDLE_MOUNT_POINT": os.fspath(bundle_mount)}
            try:
                hooks.run_hook(hooks.hook_path(bundle_mount, mf.hook_name), "install-check", env)
            except hooks.HookRejected as exc:
                raise exc.prefixed("Bundle rejected: ") from exc
        else:
            self._check_compatible(bundle)
        self.steps.done()

    def _plan_jobs(self, bundle: Bundle, bundle_mount: Path) -> list[_Plan]:
        """Determine the target install group; one plan per image."""
        self.steps.begin("Determining target install group", 40)
        group_error: RaucError | None = None
        try:
            targets = determine_target_group(self.ctx.slots)
        except RaucError as exc:
            targets, group_error = {}, exc
        plans = [self._plan(image, targets.get(image.slotclass), group_error, bundle, bundle_mount)
                 for image in _select_images(bundle, self.ctx.variant)]
        self.steps.done()
        return plans

    def _pre_check(self, plans: list[_Plan]) -> None:
        """Everything that can be checked before the first byte is written is checked now."""
        for plan in plans:
            if not self._skip(plan):
                plan.method = handlers.precheck(plan.job)

    def _update_slots(self, bundle: Bundle, plans: list[_Plan], henv: handlers.HandlerEnv) -> None:
        steps = self.steps
        self.notify("Updating slots...")
        steps.begin("Updating slots", 100)
        marked: set[str] = set()
        # As RAUC: every target boot slot is marked bad before the first image is written (the tutorial
        # device writes efi.0 first: a power cut there must already find rootfs.1 bad).
        for plan in plans:
            if plan.method is not None:           # not skipped at the pre-check
                self._mark_target_bad(plan.slot.root, marked)
        parts = 10 * max(1, len(plans))          # per image: 1 part to check, 9 to copy
        for n, plan in enumerate(plans):
            start = 40 + 60 * 10 * n // parts
            checked, end = 40 + 60 * (10 * n + 1) // parts, 40 + 60 * (10 * n + 10) // parts
            steps.set_percent(start)
            bootname = f" ({plan.slot.bootname})" if plan.slot.bootname else ""
            self.notify(f"Checking slot {plan.slot.name}")
            steps.begin(f"Checking slot {plan.slot.name}{bootname}", checked)
            skip = self._skip(plan)
            steps.done()
            if skip:
                logger.info(f"Skipping update for correct image {plan.job.image.filename}")
                steps.begin("Copying image skipped", end)
                steps.done()
                continue
            self.events.emit(eventlog.writeslot(f"Updating slot {plan.slot.name}"))
            self.notify(f"Updating slot {plan.slot.name}")
            steps.begin(f"Copying image to {plan.slot.name}", end)
            try:
                self._update_slot(bundle, plan, henv, steps.progress(checked, end))
            except RaucError as exc:
                raise exc.prefixed(f"Failed updating slot {plan.slot.name}: ") from exc
            steps.done()
            self.notify(f"Updating slot {plan.slot.name} done")
        self.notify("All slots updated")
        steps.set_percent(100)
        steps.done()

    def _activate(self, plans: list[_Plan]) -> None:
        """Mark the (root slots of the) installed slots active."""
        if not self.config.activate_installed:
            logger.info("Leaving target slot non-active (activate-installed=false)")
            return
        roots = {p.slot.root.name: p.slot.root for p in plans if p.slot.root.bootname is not None}
        for root in roots.values():
            logger.info(f"Marking target slot {root.name} as active")
            testpoints.reach("before-activate")
            try:
                mark.mark_active(self.ctx, root)
            except mark.MarkError as exc:
                raise InstallError(f"Failed to mark slot active: {exc}") from exc
            testpoints.reach("after-activate")

    def _run_custom_handler(self, bundle: Bundle, bundle_mount: Path, env: dict[str, str]) -> None:
        """[handler] filename: the bundle's own handler replaces the whole slot update."""
        mf = bundle.manifest
        assert mf.handler_name is not None
        try:
            args = shellwords.split(mf.handler_args or "") + shellwords.split(self.args.handler_args or "")
        except shellwords.ShellSplitError as exc:
            raise InstallError(f"Failed to parse handler arguments: {exc}") from None
        self.steps.begin("Launching update handler", 100)
        hooks.run_handler(hooks.bundle_file(bundle_mount, mf.handler_name, "Handler"), env, args, what="Handler")
        self.steps.done()

    def log_finished(self, error: BaseException | None) -> None:
        """The install event that ends the installation: succeeded, failed or rejected."""
        mf = self.bundle.manifest if self.bundle is not None else None
        message = None if error is None else (str(error) or type(error).__name__)
        self.events.emit(eventlog.install_finished(
            self.transaction, error=message, rejected=isinstance(error, InstallRejected),
            bundle_hash=mf.hash() if mf is not None else None, description=mf.description if mf else None,
            version=mf.version if mf else None))

    # -- checks --------------------------------------------------------------------------------
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
            if not mf.version or not semver.at_least(mf.version, limit):
                raise InstallError(f"Version mismatch: Expected at least '{limit}' but bundle manifest "
                                   f"has '{mf.version or ''}'")

    def _check_compatible(self, bundle: Bundle) -> None:
        mf = bundle.manifest
        if self.args.ignore_compatible:
            return
        if mf.compatible != self.config.compatible:
            raise InstallRejected(f"Compatible mismatch: Expected '{self.config.compatible}' but bundle "
                                  f"manifest has '{mf.compatible}'")

    def _plan(self, image: Image, slot: Slot | None, group_error: RaucError | None, bundle: Bundle,
              bundle_mount: Path) -> _Plan:
        """The plan for ``image`` into its target ``slot`` (None: the group has none)."""
        if slot is None:
            readonly = [s.name for s in self.ctx.slots.values() if s.sclass == image.slotclass
                        and s.readonly and not s.is_active]
            if readonly:
                raise InstallError(f"Target slot for class '{image.slotclass}' of image '{image.filename}' is readonly")
            if group_error is not None:
                raise group_error
            raise InstallError(f"No target slot for class '{image.slotclass}' of image '{image.filename}' found")
        if slot is self.ctx.booted or slot.is_active:
            raise InstallError(f"Refusing to write to active slot {slot.name}")
        if slot.mount_point is not None and not slot.config.allow_mounted:
            raise InstallError(f"Destination device '{slot.device}' already mounted")
        path = hooks.bundle_file(bundle_mount, image.filename, "Image") if image.filename else bundle_mount
        job = handlers.ImageJob(image=image, path=path, slot=slot_info(slot),
                                verified_by_dm=bundle.format in ("verity", "crypt"))
        job.adaptive = self._adaptive(job, slot)
        return _Plan(job, slot)

    def _adaptive(self, job: handlers.ImageJob, slot: Slot) -> handlers.AdaptiveJob | None:
        """``adaptive=block-hash-index`` where RAUC would use it: slot indexes in the data directory, the
        first non-inactive slot of the class as the seed."""
        if "block-hash-index" not in job.image.adaptive:
            return None
        if job.image_type not in handlers.ADAPTIVE_IMAGE_TYPES or slot.type not in handlers.ADAPTIVE_SLOT_TYPES:
            return None
        if not self.config.data_directory:
            logger.info("Ignoring adaptive method since 'data-directory' is not configured")
            return None
        seed = next((s for s in self.ctx.slots.values()
                     if s.sclass == slot.sclass and s is not slot and s.state != "inactive"), None)
        return handlers.AdaptiveJob(
            data_directory=self.config.data_directory, target_digest=self._installed_digest(slot),
            seed_name=seed.name if seed is not None else None, seed_device=seed.device if seed is not None else None,
            seed_digest=self._installed_digest(seed) if seed is not None else None)

    def _installed_digest(self, slot: Slot) -> str | None:
        """The sha256 of the image the slot holds, from its status (None: unknown)."""
        try:
            st = status.load_slot_status(self.config, slot)
        except RaucError:
            return None
        return st.checksum_sha256 if st.status == "ok" else None

    def _skip(self, plan: _Plan) -> bool:
        """install-same=false and the slot status says the slot holds this image already."""
        if plan.job.slot.install_same:
            return False
        try:
            st = status.load_slot_status(self.config, plan.slot)
        except RaucError:
            return False
        return handlers.should_skip(plan.job, st.checksum_sha256, st.status)

    # -- slot updates --------------------------------------------------------------------------
    def _mark_target_bad(self, boot_slot: Slot, marked: set[str]) -> None:
        """Mark the boot slot of a target bad before its first byte is written (once per slot)."""
        if boot_slot.bootname is None or boot_slot.name in marked:
            return
        logger.info(f"Marking target slot {boot_slot.name} as bad")
        try:
            mark.mark_bad(self.ctx, boot_slot)
        except mark.MarkError as exc:
            raise InstallError(f"Failed marking slot {boot_slot.name} non-bootable: {exc}") from exc
        marked.add(boot_slot.name)
        testpoints.reach("marked-bad")

    def _update_slot(self, bundle: Bundle, plan: _Plan, henv: handlers.HandlerEnv,
                     progress: Callable[[int, int], None]) -> None:
        """Write one image; the slot status says pending, then ok (or failed)."""
        self._mark_status(plan.slot, "pending")
        pause = testpoints.copy_progress()

        def copied(done: int, total: int) -> None:
            progress(done, total)
            if pause is not None:
                pause(done, total)
        try:
            handlers.install_image(plan.job, henv, method=plan.method, progress=copied)
        except RaucError:
            self._mark_status(plan.slot, "failed", quiet=True)
            raise
        testpoints.reach("copied")
        self.notify(f"Updating slot {plan.slot.name} status")
        self._record_installed(bundle, plan)

    def _mark_status(self, slot: Slot, value: str, quiet: bool = False) -> None:
        def change(st: SlotStatus) -> None:
            st.status = value
        try:
            status.update_slot_status(self.config, slot, change)
        except RaucError:
            if not quiet and self.config.central_status:
                raise

    def _record_installed(self, bundle: Bundle, plan: _Plan) -> None:
        mf, image = bundle.manifest, plan.job.image

        def change(st: SlotStatus) -> None:
            st.bundle_compatible = mf.compatible
            st.bundle_version = mf.version
            st.bundle_description = mf.description
            st.bundle_build = mf.build
            st.bundle_hash = mf.hash()
            st.status = "ok"
            st.checksum_sha256 = image.sha256
            st.checksum_size = image.size
            st.installed_transaction = self.transaction
            st.installed_timestamp = status.timestamp()
            st.installed_count += 1
        try:
            status.update_slot_status(self.config, plan.slot, change, pause_point="status-write")
        except RaucError as exc:
            if self.config.central_status:
                raise
            logger.info(f"Failed to save status of slot {plan.slot.name}: {exc}")

    # -- environments --------------------------------------------------------------------------
    def _base_env(self, bundle: Bundle) -> dict[str, str]:
        """RAUC_SYSTEM_*, RAUC_MF_*, RAUC_META_*, RAUC_MOUNT_PREFIX and RAUC_BUNDLE_SPKI_HASHES."""
        env = _system_env(self.config, dict(self.ctx.system_info), self.ctx.variant)
        env.update(hooks.manifest_env(bundle.manifest))
        env["RAUC_MOUNT_PREFIX"] = self.mountprefix
        if bundle.verified is not None:
            env["RAUC_BUNDLE_SPKI_HASHES"] = hooks.spki_hashes(bundle.verified.chain)
        return env

    def _system_handler_env(self, base_env: dict[str, str], bundle_mount: Path,
                            plans: list[_Plan]) -> dict[str, str]:
        """The environment of the system handlers and of the bundle's own handler."""
        booted = self.ctx.booted
        return handlers.handler_env(
            base={**base_env, "RAUC_CURRENT_BOOTNAME": (booted.bootname or "") if booted else "",
                  "RAUC_BUNDLE_MOUNT_POINT": os.fspath(bundle_mount),
                  "RAUC_UPDATE_SOURCE": os.fspath(bundle_mount),
                  "RAUC_TRANSACTION_ID": self.transaction},
            slots=[slot_info(s) for s in self.ctx.slots.values()],
            targets={p.job.slot.name: p.job for p in plans})


def run_cli_install(bundle: str, args: InstallArgs, *, config: SystemConfig, emit: ProgressLine,
                    err: ProgressLine) -> int:
    """Run :func:`install` with RAUC's client output; return the exit code (0/1)."""
    try:
        install(bundle, args, config=config, progress=emit)
    except RaucError as exc:
        emit(f"LastError: {exc}")
        err(f"Installing `{bundle}` failed")
        return 1
    emit(f"Installing `{bundle}` succeeded")
    return 0


__all__: Sequence[str] = ("InstallArgs", "Steps", "install", "run_cli_install", "slot_info")
