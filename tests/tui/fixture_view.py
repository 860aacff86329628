"""A fixed NodeView for snapshots: a small edge mesh on one LoRa interface near its airtime
budget, three peers, one agent restarting, an open proposal. No clock, no ids that change."""

from __future__ import annotations

from collections import deque

from tui.model import LINK_LIMIT, LogLine, NodeView, peer_key

T0 = 1_780_000_000.0  # every time in the fixture is fixed: snapshots are stable


def fixture_view() -> NodeView:
    view = NodeView(socket="/run/kai-mesh/control.sock", connected=True, problem="")
    view.set_status(
        {
            "version": "0.1.0",
            "name": "gateway",
            "node_id": "aa" * 16,
            "mesh_id": "bb" * 32,
            "mesh_name": "valley",
            "shape": "supervised",
            "admins": 1,
            "threshold": 1,
            "uptime_s": 93_784.0,
            "rss_bytes": 48_000_000,
            "agents": [{"name": "echo", "state": "ready", "restarts": 0}],
            "transports": [
                {
                    "name": "reticulum",
                    "interfaces": [
                        {
                            "name": "lora0",
                            "kind": "RNodeInterface",
                            "online": True,
                            "bitrate": 5468,
                            "tx_bytes": 182_000,
                            "rx_bytes": 420_000,
                        }
                    ],
                }
            ],
            "bus": {"delivered": 120, "errors": 2, "shed": 0},
            "refused": {"reticulum.bad_signature": 3, "control.bad_request": 0},
            "airtime": [
                {
                    "transport": "reticulum",
                    "interface": "lora0",
                    "used_s": 30.6,
                    "budget_s": 36.0,
                    "used_fraction": 0.85,
                    "queued": 2,
                }
            ],
            "outbox": {"waiting": 1, "delivered": 7},
            "governance": {
                "head": "cc" * 32,
                "height": 3,
                "admins": ["dd" * 32],
                "threshold": 1,
                "members": 4,
                "open_proposals": 1,
            },
        }
    )
    view.airtime_history["reticulum/lora0"].extend([0.2, 0.4, 0.5, 0.7, 0.8])
    view.peers = [
        _peer("ridge", "11", 1, "alive", 4.0, 812.0),
        _peer("barn", "22", 2, "suspect", 95.0, None),
        _peer("mill", "33", 3, "failed", 7200.0, None),
    ]
    # An hour of link samples for ridge (slower lately) and barn (gone quiet).
    view.link_history[peer_key(view.peers[0])] = deque(
        [600.0, 640.0, 700.0, 650.0, 720.0, 900.0, 1100.0, 812.0], maxlen=LINK_LIMIT
    )
    view.link_history[peer_key(view.peers[1])] = deque(
        [300.0, 350.0, 420.0, None, None], maxlen=LINK_LIMIT
    )
    view.services = [
        {
            "name": "vision",
            "status": "active",
            "version": "2.1",
            "manifest": "9e" * 16,
            "spec": {"strategy": "least_connections"},
            "wanted": 3,
            "owner": "gateway",
            "epoch": 4,
            "ready": 2,
            "refused": None,
            "replicas": [
                _replica(0, "gateway", "ready", 2),
                _replica(1, "ridge", "ready", 1),
                _replica(2, "barn", "pending", 0, "node suspect"),
            ],
        },
        {
            "name": "echo2",
            "status": "active",
            "version": "1",
            "manifest": "7d" * 16,
            "spec": {"strategy": "round_robin"},
            "wanted": 1,
            "owner": "ridge",
            "epoch": 1,
            "ready": 0,
            "refused": None,
            "replicas": [_replica(0, "mill", "failed", 0, "exited 1")],
        },
    ]
    view.agents = [
        {
            "name": "echo",
            "state": "ready",
            "served": 118,
            "errors": 0,
            "restarts": 0,
            "in_flight": 0,
            "concurrency": 64,
            "intents": ["digest", "echo"],
            "reason": "",
        },
        {
            "name": "sensor",
            "state": "restarting",
            "served": 40,
            "errors": 3,
            "restarts": 2,
            "in_flight": 0,
            "concurrency": 4,
            "intents": ["read"],
            "reason": "timed out",
        },
    ]
    view.outbox = [
        {
            "message_id": "ee" * 16,
            "to": "kai://barn/sensor",
            "intent": "read",
            "state": "waiting",
            "attempts": 3,
            "age_s": 310.0,
        },
    ]
    view.doc = {"services": {}, "tasks": {}, "shared": {"notes": "pump at 6", "limits": {"max": 4}}}
    view.proposals = [
        {
            "id": "f0" * 32,
            "kind": "policy_update",
            "status": "open",
            "votes_counted": 1,
            "threshold": 2,
            "why": "",
            "proposer": "aa" * 16,
            "body": {"motd": "pump at 6"},
            "votes": [
                {"voter": "aa" * 16, "signed_time": T0, "counted": True, "why": ""},
                {"voter": "11" * 16, "signed_time": T0, "counted": False, "why": "not an admin"},
            ],
        },
    ]
    view.gov_log = [
        {"height": 3, "id": "a1" * 32, "kind": "node_authorization", "body": {"role": "member"}},
    ]
    for i, (topic, level, text) in enumerate(
        [
            ("kai_mesh.node", "info", "node gateway ready"),
            ("peers", "info", "peer_suspect name=barn"),
            ("kai_mesh.egress", "warning", "lora0: airtime 85% of budget"),
        ]
    ):
        view.add_line(LogLine(time=T0 + i, topic=topic, level=level, text=text))
    return view


def _replica(n: int, node: str, state: str, in_flight: int, reason: str = "") -> dict[str, object]:
    return {
        "replica": n,
        "node": node,
        "node_id": node.encode().hex(),
        "state": state,
        "reason": reason,
        "in_flight": in_flight,
    }


def _peer(
    name: str, byte: str, hops: int, status: str, heard: float, rtt: float | None
) -> dict[str, object]:
    return {
        "name": name,
        "node_id": byte * 16,
        "hops": hops,
        "transport": "reticulum",
        "interface": "lora0",
        "last_heard_s_ago": heard,
        "rtt_ms": rtt,
        "status": status,
        "since": None,
    }
