"""pytest side of a board farm: the session holds its labgrid place from the first test to the end.

With an env file naming a ``RemotePlace`` (labs/remote.yaml, labs/board-example.yaml) the session
acquires the place on the coordinator (``LG_COORDINATOR`` or the env file's ``coordinator_address``
option) before the first test, i.e. before labgrid builds the target, and releases it after the
last one (drivers deactivated first); the ``farm_place`` fixture gives the tests its keepers.
While another session holds the place this one waits, up to ``PYRAUC_FARM_WAIT`` seconds (default
3600; 0: fail at once), printing who holds it; then it stops with ``farm: place ... is held by ...``
and exit status 3. The place is held by a keeper process (labs/place.py) that releases it when this
session ends, also when it crashes. Without an env file, or with a local one (labs/qemu.yaml),
nothing of this happens.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest
from labgrid.factory import target_factory
from labgrid.pytestplugin.hooks import LABGRID_ENV_KEY

from labs.place import BUSY_EXIT, PlaceBusy, PlaceKeeper

DEFAULT_WAIT = 3600.0
KEEPERS = pytest.StashKey[list[PlaceKeeper]]()
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


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, object, object]:
    """Hold the env file's places (none for a local env) around all tests.

    Before the first test (labgrid's own runtest_setup hook already builds the target, and a
    RemotePlace target needs its place acquired), released after the last one: by then the session
    fixtures are torn down and labgrid's ``env`` fixture has deactivated the drivers.
    """
    config = session.config
    env = config.stash.get(LABGRID_ENV_KEY, None)
    names = remote_places(env) if env is not None and session.items and not config.option.collectonly else []
    if env is None or not names:
        return (yield)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.exit("farm: a place is one board for one session: run without pytest-xdist (-p no:xdist)",
                    returncode=BUSY_EXIT)
    reporter = config.pluginmanager.get_plugin("terminalreporter")

    def say(text: str) -> None:
        if reporter is not None:
            reporter.write_line(text)
        else:
            print(text)

    wait = float(os.environ.get("PYRAUC_FARM_WAIT", DEFAULT_WAIT))
    keepers = config.stash[KEEPERS] = []
    try:
        for name in names:
            keepers.append(PlaceKeeper.acquire(coordinator_address(env), name, wait, say=say))
    except (PlaceBusy, ConnectionError) as e:
        for keeper in reversed(keepers):
            keeper.release()
        pytest.exit(f"farm: {e}", returncode=BUSY_EXIT if isinstance(e, PlaceBusy) else 1)
    try:
        return (yield)
    finally:
        env.cleanup()            # drivers off the place's resources before it goes to someone else
        for keeper in reversed(keepers):
            keeper.release()


@pytest.fixture(scope="session")
def farm_place(request: pytest.FixtureRequest) -> list[PlaceKeeper]:
    """The keepers holding this session's places (empty for a local env)."""
    return request.config.stash.get(KEEPERS, [])
