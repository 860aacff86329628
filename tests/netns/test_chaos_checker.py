"""The chaos checker itself (kai_mesh/harness/chaos.py), on made-up views of a settled mesh: it
must catch each broken promise, or the chaos test would pass on a mesh that loses data."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kai_mesh.harness.chaos import ChaosFailure, Ledger, check, unsettled


def _mesh() -> tuple[dict[str, dict[str, Any]], Ledger]:
    ledger = Ledger()
    ledger.writes = {"w_node1_1": {"n": 1}}
    ledger.tried = {"w_node1_1", "w_node2_1", "m_node1_2"}
    ledger.messages = {"aa": ("node1", "node2", "m_node1_2")}
    ledger.certified = {"p1"}
    shared = {"w_node1_1": {"n": 1}, "m_node1_2": "m_node1_2"}
    reply = {"intent": "reply", "payload": {"changed": True}}
    row = {"message_id": "aa", "state": "delivered", "reply": reply}
    view = {"digest": "d", "shared": shared, "outbox": [], "log": ["p1"], "head": "p1"}
    views = {"node1": {**copy.deepcopy(view), "outbox": [row]}, "node2": copy.deepcopy(view)}
    return views, ledger


def test_a_settled_mesh_that_kept_its_promises_passes() -> None:
    views, ledger = _mesh()
    assert unsettled(views, ledger) is None
    checked = check(views, ledger)
    assert (checked.writes, checked.messages, checked.certified, checked.keys) == (1, 1, 1, 2)
    assert checked.served_again == 0
    views["node1"]["outbox"][0]["reply"]["payload"] = {"changed": False}
    assert check(views, ledger).served_again == 1  # the recipient's agent ran it twice


@pytest.mark.parametrize(
    ("break_it", "said"),
    [
        (lambda v, lg: [x["shared"].pop("w_node1_1") for x in v.values()], "acknowledged write"),
        (lambda v, lg: [x["shared"].update(w_node1_1=2) for x in v.values()], "acknowledged write"),
        (lambda v, lg: v["node2"]["shared"].update(x=1), "differs"),
        (lambda v, lg: [x["shared"].update(ghost=1) for x in v.values()], "no client wrote"),
        (lambda v, lg: v["node1"]["outbox"].append(v["node1"]["outbox"][0]), "2 times"),
        (lambda v, lg: v["node1"]["outbox"].clear(), "0 times"),
        (lambda v, lg: v["node1"]["outbox"][0].update(state="expired"), "expired"),
        (lambda v, lg: [x["shared"].pop("m_node1_2") for x in v.values()], "effect"),
        (lambda v, lg: lg.certified.add("p2"), "not in the log"),
    ],
)
def test_each_broken_promise_is_caught(break_it: Any, said: str) -> None:
    views, ledger = _mesh()
    break_it(views, ledger)
    with pytest.raises(ChaosFailure, match=said):
        check(views, ledger)


def test_unsettled_names_what_is_still_waiting_or_different() -> None:
    views, ledger = _mesh()
    views["node1"]["outbox"][0]["state"] = "waiting"
    assert "waiting" in (unsettled(views, ledger) or "")
    views, ledger = _mesh()
    views["node2"]["shared"].pop("m_node1_2")
    assert "lacks 1" in (unsettled(views, ledger) or "")
    views, ledger = _mesh()
    views["node2"]["head"] = "p0"
    assert unsettled(views, ledger) == "nodes differ in head"
