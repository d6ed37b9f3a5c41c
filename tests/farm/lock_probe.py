"""A test session holding the farm's place (run by tests/farm/test_place_lock.py only, never collected alone).

It writes ``$PROBE_DIR/$PROBE_NAME.held`` (JSON: its pid and its keeper's, the keeper's "acquired"
line, the resources the place brought)
once it holds the place, then keeps it until ``$PROBE_DIR/$PROBE_NAME.go`` exists.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from labs.place import PlaceKeeper


@pytest.fixture
def strategy(target: Any) -> Any:
    """The lab strategy, not activated (nothing answers behind the place's resources here).

    Named ``strategy`` as in the lab suites: labgrid's runtest_setup hook then builds the target
    before any fixture runs, which needs the place already acquired.
    """
    return target.get_driver("PyraucLabStrategy", activate=False)


def test_hold_the_place(farm_place: list[PlaceKeeper], strategy: Any, target: Any) -> None:
    probe = Path(os.environ["PROBE_DIR"])
    name = os.environ["PROBE_NAME"]
    (keeper,) = farm_place
    record = {
        "pid": os.getpid(),
        "keeper": keeper.pid,
        "acquired": [line for line in keeper.lines if line.startswith("farm: acquired place")],
        "resources": sorted(type(r).__name__ for r in target.resources),
    }
    tmp = probe / f"{name}.held.tmp"
    tmp.write_text(json.dumps(record) + "\n")
    tmp.replace(probe / f"{name}.held")
    while not (probe / f"{name}.go").exists():
        time.sleep(0.2)
