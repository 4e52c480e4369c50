"""Real mounts: the emulator and ``bimfs mount --foreground`` as processes, driven by real tools.

Every test gets a fresh emulator (seed ``demo``) and a fresh mount (``mount_factory``, see
``tests/conftest.py``); teardown always unmounts and fails the test if the mount logged an error
or a traceback it was not told to expect.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.emulator import Emulator
from tests.support.mount import Mount


@pytest.fixture
def mount(emulator: Emulator, mount_factory: Callable[..., Mount]) -> Mount:
    """A mount of the whole demo account with a short directory TTL."""
    return mount_factory(emulator, "--dir-ttl", "1", "--write-back-delay", "0.2")
