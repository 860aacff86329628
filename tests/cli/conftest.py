"""Fixtures the CLI tests share."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from tests.cli.helpers import Home, fresh_home, stop


@pytest.fixture
def running() -> Iterator[Home]:
    with fresh_home() as home:
        done = home.run("init", "--name", "pi1", "--local-only")
        assert done.returncode == 0, done.stderr
        proc = home.start()
        try:
            yield home
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            stop(proc)
