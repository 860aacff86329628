"""LXMF between namespaces: store-and-forward through a propagation node, and guests.

The privileged tests run real `kai-mesh run` processes in the harness (node1 is the propagation
node, announced after 1 s) and a plain LXMF client — RNS and LXMF only, as Sideband would be —
in a namespace of its own. The first tests need no root: the guest text format and the checks
on a member's LXMessage (record, trust, signature), with in-memory identities.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import RNS
import trio
from LXMF import LXMessage
from RNS.vendor import umsgpack

from kai_mesh.core.mesh.identity import MemberRecord, NodeSecrets
from kai_mesh.harness import homes
from tests.netns.conftest import Harness, wait_for
from transports.lxmf import LxmfTransport, parse_guest_text

# Without root


def test_guest_text_format() -> None:
    assert parse_guest_text('echo echo {"x": 1}') == ("echo", "echo", {"x": 1})
    assert parse_guest_text("  Sysinfo sysinfo\n") == ("sysinfo", "sysinfo", None)
    assert parse_guest_text('echo echo "two words"') == ("echo", "echo", "two words")
    for bad in ("", "echo", "echo echo {nope"):
        with pytest.raises(ValueError):
            parse_guest_text(bad)


def _signed_lxm(secrets: NodeSecrets, record: MemberRecord, data: bytes, **fields: Any) -> Any:
    """What `LXMessage.unpack_from_bytes` gives for a member's message from an unknown source."""
    identity = RNS.Identity(create_keys=False)
    identity.load_private_key(secrets.rns_private)
    source = RNS.Destination.hash(identity, "lxmf", "delivery")
    dest = os.urandom(16)
    payload = umsgpack.packb(
        [1.0, b"", b"", {0xFB: b"kai-mesh/1", 0xFC: data, 0xFD: record.to_bytes(), **fields}]
    )
    hashed = dest + source + payload
    signature = identity.sign(hashed + RNS.Identity.full_hash(hashed))
    return SimpleNamespace(
        source_hash=source,
        signature=signature,
        packed=dest + source + signature + payload,
        fields=umsgpack.unpackb(payload)[3],
        signature_validated=False,
        unverified_reason=LXMessage.SOURCE_UNKNOWN,
    )


def test_member_messages_are_checked() -> None:
    genesis, keys = homes.make_mesh(["node1", "node2", "stranger"], "m")
    _other, other_keys = homes.make_mesh(["x"], "other")
    me, peer = keys[0], keys[1]
    trusted = {k.secrets.node_id: k.secrets.verify_key for k in keys[:2]}
    transport = LxmfTransport(
        storagedir=Path("/nonexistent"),
        rns_private=me.secrets.rns_private,
        mesh_id=genesis.mesh_id,
        node_id=me.secrets.node_id,
        member=me.member,
        trusted_keys=trusted,
    )

    def deliver(message: Any) -> None:
        transport._on_member_message(message, message.fields)

    good = _signed_lxm(peer.secrets, peer.member, b"envelope")
    deliver(good)
    event = transport.events.receive_nowait()
    assert (event.node_id, event.data) == (peer.secrets.node_id, b"envelope")
    tampered = _signed_lxm(peer.secrets, peer.member, b"envelope")
    tampered.packed = tampered.packed[:-3] + b"xyz"
    deliver(tampered)
    # peer's record, signed by another node's Reticulum key: the source is not the record's
    deliver(_signed_lxm(keys[2].secrets, peer.member, b"x"))
    deliver(_signed_lxm(keys[2].secrets, keys[2].member, b"x"))  # a member, but not trusted
    deliver(_signed_lxm(other_keys[0].secrets, other_keys[0].member, b"x"))  # another mesh
    bad = _signed_lxm(peer.secrets, peer.member, b"x")
    bad.fields[0xFC] = "not bytes"
    deliver(bad)
    big = _signed_lxm(peer.secrets, peer.member, b"x" * (transport.max_payload + 1))
    deliver(big)
    counters = transport.counters()
    assert counters["bad_signature"] == 2
    assert counters["untrusted"] == 1
    assert counters["bad_member_record"] == 1
    assert counters["malformed"] == 1
    assert counters["oversize"] == 1
    with pytest.raises(trio.WouldBlock):
        transport.events.receive_nowait()


# With root: the harness


def _status(harness: Harness, node: str) -> dict[str, Any]:
    done = harness.run("exec", node, "--", "kai-mesh", "status", "--json", timeout=20)
    if done.returncode != 0:
        return {}
    status: dict[str, Any] = json.loads(done.stdout)
    return status


def _lxmf(status: dict[str, Any]) -> dict[str, Any]:
    for transport in status.get("transports", []):
        if transport["name"] == "lxmf":
            return dict(transport)
    return {}


def _knows_pn(harness: Harness, node: str) -> bool:
    return bool(_lxmf(_status(harness, node)).get("outbound_propagation_node"))


def test_message_to_a_stopped_node_arrives_through_the_propagation_node(
    harness: Harness,
) -> None:
    harness.ok("up", "-n", "3", "--prefix", harness.prefix, "--propagation", "node1")
    for node in ("node2", "node3"):
        wait_for(lambda n=node: _knows_pn(harness, n), 30, f"{node} to hear node1's announce")
    wait_for(
        lambda: (
            len(json.loads(harness.ok("exec", "node2", "--", "kai-mesh", "peers", "--json"))) == 2
        ),
        30,
        "node2 to hear node3",
    )
    harness.ok("kill", "node3")
    sent = harness.run(
        "exec", "node2", "--",
        "kai-mesh", "send", "kai://node3/echo", "echo", '"later"', "--timeout", "4",
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["queued"] == "lxmf-propagated"
    wait_for(
        lambda: _lxmf(_status(harness, "node2"))["counters"]["propagated"] >= 1,
        30,
        "node1 to take the message",
    )
    harness.ok("start", "node3")
    wait_for(
        lambda: _status(harness, "node3").get("remote", {}).get("received", 0) >= 1,
        40,
        "node3 to fetch the message from node1",
    )
    assert _lxmf(_status(harness, "node3"))["counters"]["received"] >= 1
    # node3's echo reply comes back to node2 over LXMF, after node2 stopped waiting
    wait_for(
        lambda: _status(harness, "node2")["remote"]["late_replies"] >= 1,
        30,
        "the reply to reach node2",
    )


GUEST = textwrap.dedent(
    """
    import json, os, sys, time
    import RNS, LXMF

    configdir, target = sys.argv[1], bytes.fromhex(sys.argv[2])
    texts = sys.argv[3:]
    os.makedirs(configdir, exist_ok=True)
    with open(os.path.join(configdir, "config"), "w") as f:
        f.write(
            "[reticulum]\\n  share_instance = No\\n  enable_transport = No\\n"
            "[interfaces]\\n  [[udp]]\\n    type = UDPInterface\\n    enabled = yes\\n"
            "    ingress_control = No\\n"
            "    listen_ip = 10.77.0.255\\n    listen_port = 4242\\n"
            "    forward_ip = 10.77.0.255\\n    forward_port = 4242\\n"
        )
    RNS.Reticulum(configdir=configdir, loglevel=RNS.LOG_WARNING)
    router = LXMF.LXMRouter(storagepath=configdir)
    me = router.register_delivery_identity(RNS.Identity(), display_name="guest")
    replies = []
    router.register_delivery_callback(lambda m: replies.append(m.content_as_string()))
    router.announce(me.hash)
    deadline = time.time() + 30
    RNS.Transport.request_path(target)
    while RNS.Identity.recall(target) is None and time.time() < deadline:
        time.sleep(0.1)
    router.announce(me.hash)  # again: the node must know us to check our signature and answer
    time.sleep(0.5)
    node = RNS.Destination(
        RNS.Identity.recall(target), RNS.Destination.OUT, RNS.Destination.SINGLE,
        "lxmf", "delivery",
    )
    out = []
    for text in texts:
        want = len(replies) + 1
        router.handle_outbound(
            LXMF.LXMessage(node, me, text, "", desired_method=LXMF.LXMessage.DIRECT)
        )
        deadline = time.time() + 30
        while len(replies) < want and time.time() < deadline:
            time.sleep(0.05)
        out.append(replies[-1] if len(replies) >= want else None)
    print(json.dumps(out), flush=True)
    os._exit(0)
    """
)


def test_plain_lxmf_client_is_a_guest(harness: Harness) -> None:
    harness.ok("up", "-n", "2", "--prefix", harness.prefix)
    # node2's namespace becomes the guest's: its node is stopped, its address stays on the bridge
    harness.ok("kill", "node2")
    address = _lxmf(_status(harness, "node1"))["address"]
    script = harness.dir / "guest.py"
    script.write_text(GUEST)
    done = harness.run(
        "exec", "node2", "--",
        sys.executable, str(script), str(harness.dir / "guest"), address,
        'echo echo {"x": 1}', 'sysinfo reboot {"now": true}', "hello",
        timeout=110,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    echo, refused, malformed = json.loads(done.stdout.strip().splitlines()[-1])
    assert json.loads(echo) == {"x": 1}
    assert refused.startswith("error: refused:") and "'reboot'" in refused
    assert malformed.startswith("error: bad_request:")
    status = _status(harness, "node1")
    counters = _lxmf(status)["counters"]
    assert counters["guest_requests"] == 3 and counters["guest_replies"] == 3
    assert counters["guest_refused"] == 1 and counters["malformed"] == 1
    assert status["refused"]["lxmf.guest_refused"] == 1
