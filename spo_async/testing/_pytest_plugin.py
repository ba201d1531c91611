"""A pytest plugin that hands each test a running SPO emulator: the ``spo_emulator`` fixture.

Registered as a ``pytest11`` entry point, so installing ``spo-async`` is enough. The
fixture is synchronous and the emulator runs in its own thread
(:class:`~spo_async.testing.ThreadedEmulator`), so it works the same in plain tests,
under pytest-asyncio and under anyio, whatever loop the test itself runs on.

Configure it per test with an indirect parameter (an :class:`EmulatorConfig`, or a
mapping of fields to change) or for a whole module or project by overriding the
``spo_emulator_config`` fixture::

    @pytest.fixture
    def spo_emulator_config() -> EmulatorConfig:
        return EmulatorConfig(round_seconds=0.01, seed=7)

    @pytest.mark.parametrize("spo_emulator", [{"queue_seconds": 0.1}], indirect=True)
    def test_queue(spo_emulator: ThreadedEmulator) -> None: ...
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import attrs
import pytest

if TYPE_CHECKING:
    from spo_async.testing._config import EmulatorConfig
    from spo_async.testing._thread import ThreadedEmulator

__all__ = ["resolve_config", "running_emulator", "spo_emulator", "spo_emulator_config"]


def _emulator_types() -> tuple[type[EmulatorConfig], type[ThreadedEmulator]]:
    """Import the emulator when a test first needs it.

    This module is loaded into every pytest session of every project that installs
    spo-async, used or not, so it must not import aiohttp.web and the emulator up front.
    """
    from spo_async.testing._config import EmulatorConfig  # noqa: PLC0415 - see above
    from spo_async.testing._thread import ThreadedEmulator  # noqa: PLC0415 - see above

    return EmulatorConfig, ThreadedEmulator


def resolve_config(param: object, default: EmulatorConfig) -> EmulatorConfig:
    """Return the config a fixture parameter asks for, starting from ``default``.

    ``None`` (no parameter) keeps ``default``; an :class:`EmulatorConfig` replaces it; a
    mapping changes the named fields of ``default``.
    """
    config_type, _ = _emulator_types()
    if param is None:
        return default
    if isinstance(param, config_type):
        return param
    if isinstance(param, Mapping):
        return attrs.evolve(default, **param)
    raise TypeError(
        f"spo_emulator's parameter must be an EmulatorConfig or a mapping, got {param!r}"
    )


@contextlib.contextmanager
def running_emulator(
    param: object = None, default: EmulatorConfig | None = None
) -> Iterator[ThreadedEmulator]:
    """Run a :class:`ThreadedEmulator` for the config ``param`` asks for; the fixture's body."""
    config_type, threaded_type = _emulator_types()
    config = resolve_config(param, default if default is not None else config_type())
    with threaded_type(config) as emulator:
        yield emulator


@pytest.fixture
def spo_emulator_config() -> EmulatorConfig:
    """The configuration of ``spo_emulator``; override this fixture to change it."""
    config_type, _ = _emulator_types()
    return config_type()


@pytest.fixture
def spo_emulator(
    request: pytest.FixtureRequest, spo_emulator_config: EmulatorConfig
) -> Iterator[ThreadedEmulator]:
    """A started SPO emulator in its own thread, closed when the test ends."""
    with running_emulator(getattr(request, "param", None), spo_emulator_config) as emulator:
        yield emulator
