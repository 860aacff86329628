"""`kai-mesh revoke`: the verb's request and output, the node's reply faked (no daemon)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest

from kai_mesh.cli import governance as cli_governance
from kai_mesh.cli.main import main

REPLY = {
    "id": "ab" * 32,
    "kind": "node_revocation",
    "body": {"node_id": "cd" * 16, "cut": {"70000": 4, "9": 2}},
    "status": "open",
    "why": "",
    "votes_counted": 1,
    "threshold": 2,
}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    made: list[tuple[str, dict[str, Any]]] = []

    def call_node(args: argparse.Namespace, method: str, params: dict[str, Any]) -> Any:
        made.append((method, params))
        return REPLY

    monkeypatch.setattr(cli_governance, "call_node", call_node)
    return made


def test_revoke_asks_the_node_and_prints_the_cut(
    calls: list[tuple[str, dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["revoke", "pi2", "--expires-in", "600"]) == 0
    assert calls == [("gov_revoke", {"node": "pi2", "expires_in": 600})]
    out = capsys.readouterr().out
    assert "proposed abababababab (node_revocation): open, votes 1 of 2" in out
    assert "streams kept: 9 up to 2, 70000 up to 4" in out


def test_revoke_json(
    calls: list[tuple[str, dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["revoke", "cd" * 16, "--json"]) == 0
    assert calls == [("gov_revoke", {"node": "cd" * 16})]
    assert json.loads(capsys.readouterr().out) == REPLY


def test_withdraw_and_propose_withdraw_ask_the_node(
    calls: list[tuple[str, dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["withdraw", "abab"]) == 0
    assert main(["propose", "--withdraw", "abab"]) == 0
    assert calls == [("gov_withdraw", {"id": "abab"})] * 2
    assert "withdrew abababababab (node_revocation)" in capsys.readouterr().out
    assert main(["propose", "config_update", "--withdraw", "abab"]) == 2


def test_revoke_force_is_passed_and_the_warning_printed(
    calls: list[tuple[str, dict[str, Any]]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(REPLY, "warning", "node cd is this node: ... for good")
    assert main(["revoke", "pi2", "--force"]) == 0
    assert calls == [("gov_revoke", {"node": "pi2", "force": True})]
    assert "warning, forced: node cd is this node" in capsys.readouterr().err
