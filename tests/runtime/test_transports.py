"""Transports are built by name from the config (runtime/transports.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kai_mesh.config.settings import default_config_text, load_config
from kai_mesh.runtime import transports
from kai_mesh.runtime.transports import Built, enabled_transports, open_transports
from transports.base import TransportBase


def config(tmp_path: Path, text: str) -> object:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(path)


def test_the_config_names_the_transports_in_the_order_they_start(tmp_path: Path) -> None:
    assert enabled_transports(config(tmp_path, default_config_text("n"))) == ["reticulum", "lxmf"]
    local = default_config_text("n", local_only=True)
    assert enabled_transports(config(tmp_path, local)) == []
    head, _, tail = default_config_text("n").partition("[lxmf]")
    no_lxmf = head + "[lxmf]" + tail.replace("enabled = true", "enabled = false", 1)
    assert enabled_transports(config(tmp_path, no_lxmf)) == ["reticulum"]


def test_transports_are_taken_down_in_reverse_order_even_when_a_builder_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stopped: list[str] = []

    def builder(name: str, fail: bool = False) -> object:
        def build(paths: object, cfg: object, files: object) -> Built:
            if fail:
                raise RuntimeError(f"{name} would not start")
            return Built(TransportBase(), lambda: stopped.append(name))

        return build

    cfg = config(tmp_path, default_config_text("n"))
    monkeypatch.setitem(transports.BUILDERS, "reticulum", builder("reticulum"))
    monkeypatch.setitem(transports.BUILDERS, "lxmf", builder("lxmf"))
    with open_transports(None, cfg, None) as built:  # type: ignore[arg-type]
        assert len(built) == 2
    assert stopped == ["lxmf", "reticulum"]
    stopped.clear()
    monkeypatch.setitem(transports.BUILDERS, "lxmf", builder("lxmf", fail=True))
    with (
        pytest.raises(RuntimeError, match="lxmf would not start"),
        open_transports(None, cfg, None),  # type: ignore[arg-type]
    ):
        raise AssertionError("not reached")
    assert stopped == ["reticulum"]
