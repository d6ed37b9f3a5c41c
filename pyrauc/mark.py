"""Marking slots good, bad or active (RAUC's src/mark.c).

:func:`mark_good`, :func:`mark_bad` and :func:`mark_active` work on a boot slot (one with a
bootname) through the context's bootloader backend; they are used by ``rauc status mark-*``
(:func:`mark_run`), by the installation (the target slot is marked bad before it is written and
active afterwards) and by the D-Bus service's ``Mark``. Activating also records
``activated.timestamp`` and ``activated.count`` in the slot status. Every mark is an event of the
event log (:mod:`pyrauc.eventlog`).

A refusal of the bootloader is a :class:`MarkError` carrying the backend's message; each caller
adds its context ("failed to activate slot rootfs.1: ...", "Failed to mark slot active: ...").
The slot names and messages are current RAUC's (rauc-dbus.md, ``Mark``): rauc 1.8 said "marked
slot X as good" and "activated slot X", and found a child slot's name as well.
"""

from __future__ import annotations

import logging

from pyrauc import eventlog, status, testpoints
from pyrauc.context import Context
from pyrauc.errors import RaucError
from pyrauc.slots import Slot, other_boot_slots, resolve_identifier

log = logging.getLogger(__name__)

#: the ``rauc status`` subcommands
MARK_GOOD = "mark-good"
MARK_BAD = "mark-bad"
MARK_ACTIVE = "mark-active"


class MarkError(RaucError):
    """The bootloader backend could not mark a slot."""


def _set_state(context: Context, slot: Slot, good: bool) -> None:
    try:
        context.backend.set_state(slot, good)
    except RaucError as exc:
        raise MarkError(str(exc)) from exc
    context.event_log.emit(eventlog.marked(slot.name, slot.bootname, "good" if good else "bad"))


def mark_good(context: Context, slot: Slot) -> None:
    """Mark the boot slot ``slot`` good (bootable)."""
    testpoints.reach("mark-good")
    _set_state(context, slot, True)


def mark_bad(context: Context, slot: Slot) -> None:
    """Mark the boot slot ``slot`` bad (not bootable)."""
    _set_state(context, slot, False)


def mark_active(context: Context, slot: Slot) -> None:
    """Make the boot slot ``slot`` the primary one, then record the activation in its status.

    MarkError if the backend refuses (nothing recorded then); a failing status update raises the
    status error (StatusError or OSError) although the slot is active already.
    """
    try:
        context.backend.set_primary(slot)
    except RaucError as exc:
        raise MarkError(str(exc)) from exc
    bundle_hash = None
    try:
        bundle_hash = status.record_activated(context.config, slot).bundle_hash
    finally:
        context.event_log.emit(eventlog.marked(slot.name, slot.bootname, "active", bundle_hash))


def mark_run(context: Context, state: str, identifier: str) -> tuple[list[Slot], str]:
    """``rauc status mark-good|mark-bad|mark-active [booted|other|SLOT]``: the slots marked and
    current RAUC's message ("marked slot(s) rootfs.1 as active").

    ``other`` may stand for several slots (A/B/C): all are marked bad; good and active refuse
    ("cannot mark multiple slots as good", "cannot activate multiple slots"). Errors are
    RaucErrors ("Failed marking slot X as good:  ..." with RAUC's two spaces); a status update that
    fails after activation is only logged as a warning.
    """
    slots = resolve_identifier(context.slots, context.booted, identifier)
    if state == MARK_ACTIVE:
        if len(slots) > 1:
            raise RaucError("cannot activate multiple slots")
        slot = slots[0]
        try:
            mark_active(context, slot)
        except MarkError as exc:
            raise exc.prefixed(f"failed to activate slot {slot.name}: ") from exc
        except (RaucError, OSError) as exc:
            log.warning("Failed to update status of slot %s: %s", slot.name, exc)
        return slots, _marked(slots, "active")
    good = state == MARK_GOOD
    word = "good" if good else "bad"
    if good and len(slots) > 1:
        raise RaucError("cannot mark multiple slots as good")
    _set_each(context, slots, good)
    if good and context.config.prevent_late_fallback and context.booted is not None \
            and slots[0] is context.booted.root:
        _prevent_late_fallback(context, slots[0])
    return slots, _marked(slots, word)


def _set_each(context: Context, slots: list[Slot], good: bool) -> None:
    """Mark each slot good or bad; RAUC's "Failed marking slot X as good:  ..." on a refusal."""
    for slot in slots:
        try:
            (mark_good if good else mark_bad)(context, slot)
        except MarkError as exc:
            raise exc.prefixed(f"Failed marking slot {slot.name} as {'good' if good else 'bad'}:  ") from exc


def _marked(slots: list[Slot], state: str) -> str:
    """RAUC's (1.14+) message for a successful mark."""
    return f"marked slot(s) {' '.join(s.name for s in slots)} as {state}"


def _prevent_late_fallback(context: Context, booted: Slot) -> None:
    """``prevent-late-fallback=true``: once the booted slot is good, the others of its class are
    marked bad, so that a later boot failure cannot fall back to an older system."""
    for other in other_boot_slots(context.slots, booted):
        try:
            mark_bad(context, other)
        except MarkError as exc:
            raise exc.prefixed(f"Failed marking slot {other.name} as bad:  ") from exc
        log.info("Marked slot %s as bad (prevent-late-fallback)", other.name)

