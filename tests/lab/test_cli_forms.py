"""RAUC's command-line forms on the target: `rauc` there accepts what scripts and update clients use.

The same checks pass against pyrauc (installed as `rauc`) and Debian's C rauc 1.8 (the debian image
variant): option placement, `=` and space forms, help and usage errors, exit codes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from labs import lab
from tests.helpers.bundles import pyrauc, write_content
from tests.lab.target import RaucTargetDriver

KEYRING = "/etc/rauc/keyring.pem"
BUNDLE = "/data/forms.raucb"


@pytest.fixture(scope="module")
def bundle_on_target(tmp_path_factory: pytest.TempPathFactory, lab_run: Path) -> str:
    """A small verity bundle signed by the lab's signer (the image's keyring trusts its CA)."""
    d = tmp_path_factory.mktemp("forms")
    pki = lab.cache_dir() / "lab-pki"
    local = d / "forms.raucb"
    pyrauc("bundle", "--cert", pki / "signer.cert.pem", "--key", pki / "signer.key.pem",
           write_content(d / "c", "verity", rootfs_size=65536), local, check=True)
    return str(local)


def _info(dut: RaucTargetDriver, options: str) -> tuple[str, int]:
    out, _err, code = dut.run(f"rauc {options}")
    return " ".join(line.split()[0] for line in out.splitlines() if line.strip()), code


def test_help_and_usage_errors(dut: RaucTargetDriver) -> None:
    out, _err, code = dut.run("rauc --help")
    assert code == 0 and out.splitlines()[:2] == ["Usage:", "  rauc [OPTION…] <COMMAND>"]
    out, _err, code = dut.run("rauc info --help")
    assert code == 0 and out.splitlines()[1] == "  rauc [OPTION…] info <FILE>"
    out, _err, code = dut.run("rauc")
    assert code == 1 and out.startswith("Usage:")
    out, _err, code = dut.run("rauc frobnicate")
    assert code == 1 and out.splitlines()[0] == "Invalid command 'frobnicate' given"
    _out, err, code = dut.run("rauc info --frobnicate x")
    assert code == 1 and "Unknown option --frobnicate" in err
    _out, err, code = dut.run("rauc info a b")
    assert code == 1 and "Excess argument: b" in err
    out, _err, code = dut.run("rauc --version")
    assert code == 0 and out.startswith("rauc 1.")


def test_options_anywhere(dut: RaucTargetDriver, bundle_on_target: str) -> None:
    dut.put(bundle_on_target, BUNDLE)
    forms = [f"--keyring={KEYRING} info {BUNDLE}", f"--keyring {KEYRING} info {BUNDLE}",
             f"info {BUNDLE} --keyring {KEYRING}", f"info --keyring={KEYRING} {BUNDLE}",
             f"-c /etc/rauc/system.conf info {BUNDLE}", f"info {BUNDLE} --conf=/etc/rauc/system.conf"]
    results = {form: _info(dut, form) for form in forms}
    first = next(iter(results.values()))
    assert first[1] == 0 and first[0].startswith("Compatible:"), results
    assert all(r == first for r in results.values()), results
    shell, _err, code = dut.run(f"rauc info --output-format=shell {BUNDLE}")
    assert code == 0 and "RAUC_MF_COMPATIBLE='Test Config'" in shell
    spaced, _err, code = dut.run(f"rauc info --output-format shell {BUNDLE}")
    assert code == 0 and spaced == shell


def test_status_forms(dut: RaucTargetDriver) -> None:
    plain, _err, code = dut.run("rauc status --output-format=shell")
    assert code == 0 and "RAUC_SYSTEM_COMPATIBLE=" in plain
    for form in ("rauc --conf=/etc/rauc/system.conf status --output-format=shell",
                 "rauc status --output-format shell -c /etc/rauc/system.conf"):
        out, _err, code = dut.run(form)
        assert code == 0 and out == plain, form
    out, _err, code = dut.run("rauc status mark-good")
    assert code == 0 and out.startswith("rauc status: marked slot")
    _out, err, code = dut.run("rauc status mark-good nonsense.0")
    assert code == 1 and err.strip().splitlines()[-1].startswith("rauc mark: ")
