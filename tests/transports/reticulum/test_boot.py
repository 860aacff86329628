"""Starting Reticulum: RNS's duplicate-packet memory is bounded before RNS starts (issue 15's
soak: with RNS's default a node on a busy segment held up to a million packet hashes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import RNS

from transports.reticulum import _boot


def test_the_duplicate_window_is_set_before_rns_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    class FakeReticulum:
        def __init__(self, **kwargs: Any) -> None:
            seen["maxsize"] = RNS.Transport.hashlist_maxsize

    monkeypatch.setattr(RNS.Transport, "hashlist_maxsize", 1_000_000)
    monkeypatch.setattr(RNS, "Reticulum", FakeReticulum)
    _boot.start_reticulum(tmp_path / "rns", "[reticulum]\n")
    assert seen["maxsize"] == _boot.DUPLICATE_WINDOW < 1_000_000
