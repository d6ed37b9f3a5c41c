"""pytest side of a board farm: the session holds its labgrid place from the first test to the end.

With an env file naming a ``RemotePlace`` (labs/remote.yaml, labs/board-example.yaml) the autouse
session fixture ``farm_place`` acquires the place on the coordinator (``LG_COORDINATOR`` or the env
file's ``coordinator_address`` option) before labgrid's ``target`` fixture looks at it, and releases
it after the last test (drivers deactivated first). While another session holds the place this one
waits, up to ``PYRAUC_FARM_WAIT`` seconds (default 3600; 0: fail at once), printing who holds it;
then it stops with ``farm: place ... is held by ...`` and exit status 3. The place is held by a
keeper process (labs/place.py) that releases it when this session ends, also when it crashes.
Without an env file, or with a local one (labs/qemu.yaml), the fixture does nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from labgrid.factory import target_factory
from labgrid.pytestplugin.hooks import LABGRID_ENV_KEY

from labs.place import BUSY_EXIT, PlaceBusy, PlaceKeeper

DEFAULT_WAIT = 3600.0
__all__ = ["BUSY_EXIT", "farm_place"]


def remote_places(env: Any) -> list[str]:
    """Names of the RemotePlace resources in ENV's targets."""
    names: list[str] = []
    for role in env.config.get_targets().values():
        resources, _ = target_factory.normalize_config(role)
        names += list(resources.get("RemotePlace", {}))
    return names


def coordinator_address(env: Any) -> str:
    """Where labgrid's RemotePlace looks for the coordinator: the env option, $LG_COORDINATOR, the default."""
    default = os.environ.get("LG_COORDINATOR", "127.0.0.1:20408")
    return str(env.config.get_option("coordinator_address", default))


@pytest.fixture(scope="session", autouse=True)
def farm_place(request: pytest.FixtureRequest) -> Iterator[list[PlaceKeeper]]:
    """Hold the env file's places (none for a local env) for the whole session."""
    env = request.config.stash.get(LABGRID_ENV_KEY, None)
    names = remote_places(env) if env is not None else []
    if env is None or not names:
        yield []
        return
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")

    def say(text: str) -> None:
        if reporter is not None:
            reporter.write_line(text)
        else:
            print(text)

    wait = float(os.environ.get("PYRAUC_FARM_WAIT", DEFAULT_WAIT))
    keepers: list[PlaceKeeper] = []
    try:
        for name in names:
            keepers.append(PlaceKeeper.acquire(coordinator_address(env), name, wait, say=say))
    except (PlaceBusy, ConnectionError) as e:
        for keeper in reversed(keepers):
            keeper.release()
        pytest.exit(f"farm: {e}", returncode=BUSY_EXIT if isinstance(e, PlaceBusy) else 1)
    try:
        yield keepers
    finally:
        env.cleanup()            # drivers off the place's resources before it goes to someone else
        for keeper in reversed(keepers):
            keeper.release()
