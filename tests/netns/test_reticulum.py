"""kai-mesh over real Reticulum: discovery, echo, relaying, slow lossy links and foreign nodes.

Every test builds its own harness (`up`, about 1 s), one node per network namespace, each node a
real `kai-mesh run` with one RNS UDP broadcast interface, and drives it with the real CLI through
`harness exec`. Waits are bounded polls (`wait_for`) or the CLI's own `--timeout`.

Payloads for the Resource tests are random base64 text, so RNS's compression cannot shrink them:
20 KB of JSON really crosses the link. `test_20kb_at_5kbit_5pct_loss_LONG` is the long one (up to
300 s); the rest of the file takes about a minute.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from kai_mesh.agents.echo import payload_digest
from kai_mesh.client import ControlClient
from kai_mesh.config.settings import NodePaths
from kai_mesh.core.control.errors import ControlError
from kai_mesh.core.mesh.genesis import Genesis
from kai_mesh.core.mesh.identity import MemberRecord, NodeSecrets
from kai_mesh.harness import homes, netns
from tests.netns.conftest import Harness, wait_for

pytestmark = pytest.mark.slow

KAI_MESH = str(Path(sys.executable).parent / "kai-mesh")


def km(h: Harness, node: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`kai-mesh ARGS` in `node`'s namespace with its home; the caller checks the exit code."""
    return h.run("exec", node, "--", "kai-mesh", *args, timeout=timeout)


def km_json(h: Harness, node: str, *args: str) -> Any:
    done = km(h, node, *args, "--json")
    assert done.returncode == 0, f"{node}: kai-mesh {' '.join(args)}: {done.stderr}"
    return json.loads(done.stdout)


def peer_names(h: Harness, node: str) -> set[str]:
    return {p["name"] for p in km_json(h, node, "peers")}


def refused(h: Harness, node: str, reason: str) -> int:
    return int(km_json(h, node, "status")["refused"][reason])


def wait_peers(h: Harness, node: str, names: set[str], timeout: float = 20) -> None:
    wait_for(lambda: names <= peer_names(h, node), timeout, f"{node} to hear {sorted(names)}")


def echo(h: Harness, src: str, dst: str, payload: Any, timeout: float = 15) -> Any:
    """Send `payload` to `dst`'s echo agent from `src`; return the payload that came back."""
    done = km(
        h,
        src,
        "send",
        f"kai://{dst}/echo",
        "echo",
        json.dumps(payload),
        "--timeout",
        str(timeout),
        timeout=timeout + 30,
    )
    assert done.returncode == 0, f"{src} -> {dst}: {done.stderr.strip()}"
    return json.loads(done.stdout)


def incompressible(size: int) -> str:
    """`size` characters of random base64: RNS's bz2 cannot make it smaller than ~3/4."""
    return base64.b64encode(os.urandom(size))[:size].decode()


# Discovery and echo


def test_two_nodes_discover_each_other_and_echo(harness: Harness) -> None:
    harness.ok("up", "-n", "2", "--prefix", harness.prefix)
    wait_peers(harness, "node1", {"node2"})
    wait_peers(harness, "node2", {"node1"})
    done = km(harness, "node1", "send", "kai://node2/echo", "echo", '{"x": 1}')
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '{"x": 1}'
    status = km_json(harness, "node2", "status")
    assert status["remote"]["received"] >= 1  # it came over the transport, not the local bus


def test_five_nodes_all_reach_each_other(harness: Harness) -> None:
    harness.ok("up", "-n", "5", "--prefix", harness.prefix)
    names = [f"node{k}" for k in range(1, 6)]
    for name in names:
        wait_peers(harness, name, set(names) - {name}, timeout=30)
    pairs = [(a, b) for a in names for b in names if a != b]

    def one(pair: tuple[str, str]) -> tuple[tuple[str, str], Any]:
        src, dst = pair
        return pair, echo(harness, src, dst, {"from": src, "to": dst})

    with ThreadPoolExecutor(max_workers=5) as pool:
        replies = dict(pool.map(one, pairs))
    assert len(replies) == 20
    for (src, dst), payload in replies.items():
        assert payload == {"from": src, "to": dst}


def test_line_of_three_relays_through_the_middle(harness: Harness) -> None:
    harness.ok("up", "-n", "3", "--topology", "line", "--prefix", harness.prefix)
    assert not harness.ping("node1", "10.77.0.3")  # not adjacent at L2: node2 must relay
    wait_peers(harness, "node1", {"node3"})
    wait_peers(harness, "node3", {"node1"})
    ping = km_json(harness, "node1", "ping", "node3")
    assert ping["hops"] == 2
    relay_tx = _tx_bytes(harness, "node2")
    payload = {"blob": incompressible(600)}
    assert echo(harness, "node1", "node3", payload) == payload
    # Request and reply (each > 600 B) were both retransmitted by node2.
    assert _tx_bytes(harness, "node2") - relay_tx >= 1200


def _tx_bytes(h: Harness, node: str) -> int:
    transports = km_json(h, node, "status")["transports"]
    transport = next(t for t in transports if t["name"] == "reticulum")
    return sum(int(i["tx_bytes"]) for i in transport["interfaces"])


# Slow, lossy links


def test_lora_link_small_message_and_20kb_resource(harness: Harness) -> None:
    harness.ok("up", "-n", "2", "--link", "lora", "--prefix", harness.prefix)
    assert harness.json("status", "--json")["nodes"][0]["rate"] == "20kbit"
    wait_peers(harness, "node1", {"node2"}, timeout=40)
    small = {"text": incompressible(180)}
    assert len(json.dumps(small)) >= 190
    assert echo(harness, "node1", "node2", small, timeout=60) == small
    big = {"blob": incompressible(20_000)}
    assert echo(harness, "node1", "node2", big, timeout=120) == big


def test_20kb_at_5kbit_5pct_loss_LONG(harness: Harness) -> None:
    """The long one (CI runs it): 20 KB arrives intact at 5 kbit/s with 5 % loss, within 300 s.

    The agent answers with the payload's SHA-256 (`echo`'s `digest` intent) rather than the
    payload: one 20 KB transfer, as the issue asks, not two. The nodes are told the link's real
    bitrate: told 20 kbit/s, their heartbeats (every 1.6 s) took a fifth of the 5 kbit/s link."""
    started = time.monotonic()
    up = ("up", "-n", "2", "--link", "lora", "--bitrate", "5000", "--prefix", harness.prefix)
    harness.ok(*up)
    harness.ok("shape", "--all", "--rate", "5kbit", "--loss", "5%")
    wait_peers(harness, "node1", {"node2"}, timeout=60)
    big = {"blob": incompressible(20_000)}
    left = 300 - (time.monotonic() - started)
    done = km(
        harness,
        "node1",
        "send",
        "kai://node2/echo",
        "digest",
        json.dumps(big),
        "--timeout",
        str(left),
        timeout=left + 30,
    )
    assert done.returncode == 0, done.stderr.strip()
    assert json.loads(done.stdout) == payload_digest(big)


# Nodes that are not members


@contextmanager
def foreign_node(h: Harness, home: Path, index: int = 9) -> Iterator[Path]:
    """Run the node at `home` in a namespace of its own on the harness's bridge.

    The namespace is `PREFIX-node{index}`, so the fixture's `down` removes it (and kills the node)
    even if this test dies first. Yields the node's control socket.
    """
    namespace = f"{h.prefix}-node{index}"
    netns.add_namespace(namespace)
    netns.add_node_link(f"{h.prefix}-hub", f"p{index}", namespace, f"10.77.0.{index}/24")
    paths = NodePaths.resolve(home)
    homes.write_config(paths, home.name, transport=False, bitrate=None)
    with open(home / "node.log", "ab") as log:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", namespace, KAI_MESH, "--home", str(home), "run"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def ready() -> bool:
            assert proc.poll() is None, (home / "node.log").read_text()
            try:
                with ControlClient(paths.socket, timeout=1) as client:
                    client.call("ping")
            except Exception:
                return False
            return True

        wait_for(ready, 30, f"{home.name} to start")
        yield paths.socket
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_node_of_another_mesh_is_ignored(harness: Harness) -> None:
    harness.ok("up", "-n", "2", "--prefix", harness.prefix)
    wait_peers(harness, "node1", {"node2"})
    before = refused(harness, "node1", "reticulum.other_mesh")
    home = harness.dir / "intruder"
    done = subprocess.run(
        [KAI_MESH, "--home", str(home), "init", "--name", "intruder", "--mesh", "other"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with foreign_node(harness, home):
        wait_for(
            lambda: refused(harness, "node1", "reticulum.other_mesh") > before,
            20,
            "node1 to refuse the other mesh's announce",
        )
        assert peer_names(harness, "node1") == {"node2"}
        assert peer_names(harness, "node2") == {"node1"}


def test_untrusted_node_with_copied_genesis_is_refused(harness: Harness) -> None:
    harness.ok("up", "-n", "2", "--prefix", harness.prefix)
    wait_peers(harness, "node1", {"node2"})
    before = refused(harness, "node1", "reticulum.untrusted")
    # Same genesis as the mesh, but a key the genesis does not trust.
    genesis = Genesis.from_bytes(NodePaths.resolve(harness.dir / "node1").genesis.read_bytes())
    secrets = NodeSecrets.generate(os.urandom)
    home = harness.dir / "stranger"
    member = MemberRecord.create(secrets, "stranger", genesis.mesh_id)
    homes.write_node_files(NodePaths.resolve(home), secrets, genesis, member)
    with foreign_node(harness, home) as socket_path:
        wait_for(
            lambda: refused(harness, "node1", "reticulum.untrusted") > before,
            20,
            "node1 to refuse the untrusted node's announce",
        )
        assert peer_names(harness, "node1") == {"node2"}
        # The stranger trusts node1 (same genesis), so it can open a link and offer its member
        # record; node1 must refuse it and its message must not be served.
        wait_for(lambda: _socket_peers(socket_path) >= {"node1"}, 20, "stranger to hear node1")
        after_announce = refused(harness, "node1", "reticulum.untrusted")
        request = {"to": "kai://node1/echo", "intent": "echo", "payload": 1, "timeout": 8}
        with (
            ControlClient(socket_path, timeout=30) as client,
            pytest.raises(ControlError, match=r"\((timeout|unreachable)\)"),
        ):
            client.call("send", request)
        assert refused(harness, "node1", "reticulum.untrusted") > after_announce
        assert km_json(harness, "node1", "status")["remote"]["received"] == 0


def _socket_peers(socket_path: Path) -> set[str]:
    with ControlClient(socket_path, timeout=5) as client:
        return {p["name"] for p in client.call("peers")}
