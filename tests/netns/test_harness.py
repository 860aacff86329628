"""`kai-mesh harness`: namespaces, topologies, partitions, shaping, node processes, cleanup.

The privileged tests build real namespaces and start real `kai-mesh run` processes (about 1 s
per `up`); the rest check the pieces that need no root.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psutil
import pytest

from kai_mesh.config.settings import NodePaths, load_config
from kai_mesh.harness import cli, cluster, homes, netns
from kai_mesh.runtime.node import NodeFiles
from tests.netns.conftest import Harness, wait_for


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _in_ns(ns: str, *argv: str) -> str:
    done = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


# Without root


def test_not_root_is_exit_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(netns.NotPrivileged, match="needs root"):
        netns.require_privileges()
    assert cli.main(["up", "-n", "2", "--dir", str(tmp_path)]) == 2
    assert cli.main(["down", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all("needs root" in line for line in err)


def test_homes_share_one_genesis_and_load(tmp_path: Path) -> None:
    genesis, keys = homes.make_mesh(["node1", "node2", "node3"], "harness")
    assert genesis.admins == (keys[0].secrets.verify_key,) and genesis.threshold == 1
    assert set(genesis.trusted_nodes) == {k.secrets.verify_key for k in keys}
    for key in keys:
        paths = NodePaths.resolve(tmp_path / key.name)
        homes.write_node_files(paths, key.secrets, genesis, key.member)
        homes.write_config(paths, key.name, transport=key.name == "node2", bitrate=20_000)
        files = NodeFiles.load(paths)
        assert files.genesis.mesh_id == genesis.mesh_id and files.member.name == key.name
        config = load_config(paths.config_file)
        assert config.name == key.name
        assert config.reticulum.transport == (key.name == "node2")
        (iface,) = config.interfaces
        assert (iface.type, iface.bitrate, iface.ingress_control) == ("udp", 20_000, False)


def test_topologies_and_rules() -> None:
    assert cluster.neighbours("line", 4) == [(1, 2), (2, 3), (3, 4)]
    assert cluster.neighbours("tree", 5) == [(1, 2), (1, 3), (2, 4), (2, 5)]
    script = netns.bridge_rules_script([("p1", "p2")], [["p1"], ["p2", "p3"]])
    assert 'iifname { "p1" } oifname { "p2", "p3" } drop' in script
    assert "policy drop" in script and 'iifname "p1" oifname "p2" accept' in script
    assert "policy drop" not in netns.bridge_rules_script(None, [])
    assert netns.parse_loss("1%") == 1.0 and netns.check_rate("20kbit") == "20kbit"
    with pytest.raises(netns.UsageError):
        netns.parse_loss("150%")
    with pytest.raises(netns.UsageError):
        netns.check_rate("fast")


# With root: real namespaces and nodes


@pytest.mark.slow
def test_bridge_cluster(harness: Harness) -> None:
    harness.ok("up", "-n", "3", "--topology", "bridge", "--prefix", harness.prefix)
    again = harness.run("up", "-n", "3", "--prefix", harness.prefix)
    assert again.returncode == 1 and "already up" in again.stderr
    statuses = [
        json.loads(harness.ok("exec", f"node{k}", "--", "kai-mesh", "status", "--json"))
        for k in (1, 2, 3)
    ]
    assert [s["name"] for s in statuses] == ["node1", "node2", "node3"]
    assert len({s["mesh_id"] for s in statuses}) == 1
    assert harness.run("exec", "node1", "--", "sh", "-c", "exit 7").returncode == 7

    assert harness.ping("node1", "10.77.0.2")
    harness.ok("partition", "node1", "node2,node3")
    assert not harness.ping("node1", "10.77.0.2")
    assert harness.ping("node2", "10.77.0.3")
    harness.ok("heal")
    wait_for(lambda: harness.ping("node1", "10.77.0.2"), 10, "ping after heal")

    pid = harness.json("status", "--json")["nodes"][1]["pid"]
    harness.ok("kill", "node2")
    assert _gone(pid)
    assert harness.json("status", "--json")["nodes"][1]["alive"] is False
    harness.ok("start", "node2")
    node2 = harness.json("status", "--json")["nodes"][1]
    assert node2["alive"] is True and node2["pid"] != pid

    ns2 = f"{harness.prefix}-node2"
    harness.ok("shape", "node2", "--rate", "20kbit", "--loss", "1%")
    assert "tbf" in _in_ns(ns2, "tc", "qdisc", "show", "dev", "veth0")
    assert "tbf" in _in_ns(f"{harness.prefix}-hub", "tc", "qdisc", "show", "dev", "p2")
    assert "numgen random mod 10000 < 100 drop" in _in_ns(ns2, "nft", "list", "ruleset")
    harness.ok("shape", "node2", "--clear")
    assert "tbf" not in _in_ns(ns2, "tc", "qdisc", "show", "dev", "veth0")
    assert "numgen" not in _in_ns(ns2, "nft", "list", "ruleset")

    pids = [n["pid"] for n in harness.json("status", "--json")["nodes"]]
    harness.ok("down")
    assert harness.namespaces() == []
    assert all(_gone(p) for p in pids)


@pytest.mark.slow
def test_line_shared_channel_and_down_after_crash(harness: Harness) -> None:
    harness.ok("up", "-n", "3", "--topology", "line", "--prefix", harness.prefix)
    assert harness.ping("node1", "10.77.0.2")
    assert not harness.ping("node1", "10.77.0.3")  # not adjacent: the bridge drops it
    transports = [n["transport"] for n in harness.json("status", "--json")["nodes"]]
    assert transports == [False, True, False]

    harness.ok("shape", "--all", "--rate", "20kbit", "--shared")
    hub = f"{harness.prefix}-hub"
    assert "tbf" in _in_ns(hub, "tc", "qdisc", "show", "dev", "air0")
    assert "ingress" in _in_ns(hub, "tc", "qdisc", "show", "dev", "p1")
    assert harness.ping("node1", "10.77.0.2")  # small packets still pass the shared channel

    pids = [n["pid"] for n in harness.json("status", "--json")["nodes"]]
    (harness.dir / "state.json").unlink()  # as if the harness had crashed
    assert harness.run("status").returncode == 1
    harness.ok("down", "--prefix", harness.prefix)
    assert harness.namespaces() == []
    assert all(_gone(p) for p in pids)
