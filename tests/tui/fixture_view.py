"""A fixed NodeView for snapshots: a small edge mesh on one LoRa interface near its airtime
budget, three peers, one agent restarting, an open proposal. No clock, no ids that change."""

from __future__ import annotations

from tui.model import LogLine, NodeView

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
