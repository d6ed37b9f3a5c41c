"""Install progress as current RAUC computes it: the tutorial device's sequence, line by line."""

from __future__ import annotations

from pyrauc.install import Steps

#: seed-target.md section 8 ("from 1.10 weights changed"), for efi.0 then rootfs.1 (bootname B):
#: slot states, bundle, manifest and target group 10 % each, then per image 3 % check and 27 % copy,
#: the copy reporting in between, inner steps stopping at 99
EXPECTED_HEAD = [
    "  0% Installing",
    "  0% Determining slot states",
    " 10% Determining slot states done.",
    " 10% Checking bundle",
    " 10% Verifying signature",
    " 20% Verifying signature done.",
    " 20% Checking bundle done.",
    " 20% Checking manifest contents",
    " 30% Checking manifest contents done.",
    " 30% Determining target install group",
    " 40% Determining target install group done.",
    " 40% Updating slots",
    " 40% Checking slot efi.0",
    " 43% Checking slot efi.0 done.",
    " 43% Copying image to efi.0",
]


def _run(lines: list[str]) -> None:
    steps = Steps(lines.append)
    steps.begin("Installing", 100)
    for name, end in (("Determining slot states", 10), ("Checking bundle", 20)):
        steps.begin(name, end)
        if name == "Checking bundle":
            steps.begin("Verifying signature", 20)
            steps.done()
        steps.done()
    for name, end in (("Checking manifest contents", 30), ("Determining target install group", 40)):
        steps.begin(name, end)
        steps.done()
    steps.begin("Updating slots", 100)
    for n, (slot, shown) in enumerate((("efi.0", "efi.0"), ("rootfs.1", "rootfs.1 (B)"))):
        start, checked, end = 40 + 30 * n, 43 + 30 * n, 70 + 30 * n
        steps.set_percent(start)
        steps.begin(f"Checking slot {shown}", checked)
        steps.done()
        steps.begin(f"Copying image to {slot}", end)
        report = steps.progress(checked, end)
        for done in range(0, 101, 5):
            report(done, 100)
        steps.done()
    steps.set_percent(100)
    steps.done()
    steps.done()


def test_tutorial_sequence() -> None:
    lines: list[str] = []
    _run(lines)
    assert lines[:len(EXPECTED_HEAD)] == EXPECTED_HEAD
    efi_copy = [x for x in lines if x.endswith("% Copying image to efi.0")]
    assert efi_copy[0] == " 43% Copying image to efi.0" and len(efi_copy) > 5      # reports in between
    percents = [int(x[:3]) for x in efi_copy]
    assert percents == sorted(percents) and percents[-1] < 70
    tail_from = lines.index(" 70% Copying image to efi.0 done.")
    assert lines[tail_from + 1:tail_from + 4] == [
        " 70% Checking slot rootfs.1 (B)", " 73% Checking slot rootfs.1 (B) done.", " 73% Copying image to rootfs.1"]
    assert lines[-3:] == [" 99% Copying image to rootfs.1 done.", " 99% Updating slots done.", "100% Installing done."]
    assert all(int(x[:3]) <= 99 for x in lines[:-1])


def test_failed_steps_end_at_their_share() -> None:
    """As RAUC: a failed step ends where it would have ended (rauc 1.8: " 40% Checking bundle
    failed.", "100% Installing failed."), so a progress bar driven by Progress ends full."""
    lines: list[str] = []
    got: list[tuple[int, str, int]] = []
    steps = Steps(lines.append, lambda p, m, d: got.append((p, m, d)))
    steps.begin("Installing", 100)
    steps.begin("Checking bundle", 20)
    steps.begin("Verifying signature", 20)
    steps.fail_all()
    assert lines == ["  0% Installing", "  0% Checking bundle", "  0% Verifying signature",
                     " 20% Verifying signature failed.", " 20% Checking bundle failed.", "100% Installing failed."]
    assert got[-1] == (100, "Installing failed.", 1)
