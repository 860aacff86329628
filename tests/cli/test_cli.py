"""The `kai-mesh` command end to end: real daemons in subprocesses, real control socket."""

from __future__ import annotations

import json
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kai_mesh.cli.main import ExitCode
from kai_mesh.config.settings import NodePaths
from kai_mesh.runtime.store import Store
from tests.cli.helpers import KAI_MESH, Home, _env, fresh_home, stop, tcp_pair, wait_for_peer

pytestmark = pytest.mark.slow


@pytest.fixture
def home() -> Iterator[Home]:
    with fresh_home() as h:
        done = h.run("init", "--name", "pi1", "--local-only")
        assert done.returncode == 0, done.stderr
        yield h


@pytest.fixture
def running(home: Home) -> Iterator[Home]:
    proc = home.start()
    try:
        yield home
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        stop(proc)


def test_init_writes_private_files_and_refuses_to_overwrite(home: Home) -> None:
    paths = NodePaths.resolve(home.path)
    for path in (paths.secrets, paths.genesis, paths.member, paths.config_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert 'name = "pi1"' in paths.config_file.read_text()
    key_before = paths.secrets.read_bytes()
    again = home.run("init", "--name", "other")
    assert again.returncode == ExitCode.CONFLICT
    assert "--force" in again.stderr and "Traceback" not in again.stderr
    assert paths.secrets.read_bytes() == key_before
    forced = home.json("init", "--name", "other", "--force", "--local-only")
    assert forced["name"] == "other" and paths.secrets.read_bytes() != key_before


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[bus]\nmax_ttl = 'a week'\n", "[bus] max_ttl"),
        ("[node]\nname = 'Bad Name!'\n", "[node] name"),
        ("[bus]\nmax_tll = 5\n", "[bus] max_tll: unknown key"),
        ("[node\nname = 'x'\n", "line 1"),
        ("[weird]\n", "unknown section [weird]"),
        ("[agents.extra.x]\nclass = 'nocolon'\n", "class"),
    ],
)
def test_broken_config_is_one_line_naming_file_and_key(
    home: Home, text: str, expected: str
) -> None:
    config = NodePaths.resolve(home.path).config_file
    config.write_text(text)
    done = home.run("run")
    assert done.returncode == ExitCode.USAGE
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert str(config) in lines[0] and expected in lines[0]


def test_client_commands_without_a_daemon_say_how_to_start_one(home: Home) -> None:
    for command in (["status"], ["agents"], ["stop"], ["send", "kai://pi1/echo", "echo"]):
        done = home.run(*command)
        assert done.returncode == ExitCode.NOT_RUNNING, command
        assert len(done.stderr.strip().splitlines()) == 1
        assert f"kai-mesh --home {home.path} run" in done.stderr


def test_run_without_init_is_a_clear_error() -> None:
    with fresh_home() as empty:
        done = empty.run("run")
    assert done.returncode == ExitCode.USAGE
    assert "kai-mesh init" in done.stderr and "Traceback" not in done.stderr


def test_send_echo_status_agents_and_stop(home: Home) -> None:
    proc = home.start()
    try:
        sent = home.run("send", "kai://pi1/echo", "echo", '{"x": 1}')
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout) == {"x": 1}
        status = home.json("status")
        assert status["name"] == "pi1" and len(status["node_id"]) == 32
        assert status["bus"]["delivered"] >= 1
        by_id = home.run("send", f"kai://{status['node_id']}/echo", "echo", "[1, 2]")
        assert json.loads(by_id.stdout) == [1, 2]
        names = {a["name"]: a for a in home.json("agents")}
        assert names["echo"]["state"] == "ready" and "sysinfo" in names
        info = home.run("send", "kai://pi1/sysinfo", "sysinfo")
        assert "memory" in json.loads(info.stdout)
        human = home.run("status")
        assert human.returncode == 0 and "pi1" in human.stdout
        stopped = home.run("stop")
        assert stopped.returncode == 0, stopped.stderr
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert Store(NodePaths.resolve(home.path).database).was_clean


def test_second_run_on_the_same_home_refuses(running: Home) -> None:
    second = running.run("run", timeout=20)
    assert second.returncode == ExitCode.CONFLICT
    assert "already running" in second.stderr and "kai-mesh stop" in second.stderr
    assert running.run("status", "--json").returncode == 0  # the first one is unharmed


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_shut_down_cleanly(home: Home, signum: int) -> None:
    proc = home.start()
    proc.send_signal(signum)
    assert stop(proc) == 0
    paths = NodePaths.resolve(home.path)
    assert not paths.socket.exists()
    assert Store(paths.database).was_clean


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["send", "http://pi1/echo", "echo"], ExitCode.USAGE, "must start with 'kai://'"),
        (["send", "kai://pi1", "echo"], ExitCode.USAGE, "expected kai://NODE/AGENT"),
        (["send", "kai://pi1/echo", "echo", "{x: 1"], ExitCode.USAGE, "not valid JSON"),
        (
            ["send", "kai://pi1/echo", "echo", "1", "--priority", "urgent"],
            ExitCode.USAGE,
            "unknown priority",
        ),
        (["send", "kai://pi1/echo", "Bad Intent"], ExitCode.USAGE, "intent"),
        (["send", "kai://pi1/nobody", "echo"], ExitCode.REMOTE_ERROR, "no_such_agent"),
        (["send", "kai://pi1/echo", "shout"], ExitCode.REMOTE_ERROR, "unknown_intent"),
        (["send", "kai://elsewhere/echo", "echo"], ExitCode.REMOTE_ERROR, "unknown_node"),
    ],
)
def test_bad_input_on_the_command_line(
    running: Home, args: list[str], code: ExitCode, needle: str
) -> None:
    done = running.run(*args)
    assert done.returncode == code, done.stderr
    assert needle in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_events_follows_messages(running: Home) -> None:
    follower = subprocess.Popen(
        [*KAI_MESH, "--home", str(running.path), "events", "messages"],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        # The subscription may not be in place before the first send: send until one shows.
        for _ in range(50):
            assert running.run("send", "kai://pi1/echo", "echo", '"hi"').returncode == 0
            line = _readline_within(follower, 0.5)
            if line:
                break
        event = json.loads(line)
        assert event["event"] == "messages" and event["data"]["intent"] == "echo"
        assert event["data"]["outcome"] == "reply"
    finally:
        follower.kill()
        follower.wait()


def _readline_within(proc: subprocess.Popen[str], seconds: float) -> str:
    import select

    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], seconds)
    return proc.stdout.readline() if ready else ""


def test_a_missing_rnode_port_is_one_line_naming_the_interface(home: Home) -> None:
    config = NodePaths.resolve(home.path).config_file
    config.write_text(
        '[reticulum]\nenabled = true\n\n[[interfaces]]\nname = "lora"\ntype = "rnode"\n'
        'port = "/dev/ttyUSB-none"\nfrequency = 868300000\nbandwidth = 125000\n'
        "spreading_factor = 9\ncoding_rate = 5\ntx_power = 14\n"
    )
    done = home.run("run")
    assert done.returncode == ExitCode.FAILURE
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "'lora'" in lines[0] and "/dev/ttyUSB-none" in lines[0]


def test_outbox_and_must_arrive_on_a_node_without_transports(running: Home) -> None:
    empty = running.run("outbox")
    assert empty.returncode == 0 and "nothing waits" in empty.stdout
    assert running.json("outbox", "--all") == []
    # To itself a message is delivered at once: --must-arrive changes nothing on one node.
    local = running.run("send", "--must-arrive", "kai://pi1/echo", "echo", '"here"')
    assert local.returncode == 0 and json.loads(local.stdout) == "here"
    # A local-only node has no outbox for other nodes: an error reply, not a silent queue.
    far = running.run("send", "--must-arrive", "kai://pi9/echo", "echo", "1")
    assert far.returncode == ExitCode.REMOTE_ERROR
    assert "pi9" in far.stderr
    status = running.json("status")
    assert status["outbox"] is None and status["liveness"] is None and status["airtime"] == []


def test_state_set_show_export_import_and_the_state_agent(running: Home, tmp_path: Path) -> None:
    done = running.run("state", "set", "shared/notes", '{"today": "rain", "n": 3, "list": [1, 2]}')
    assert done.returncode == 0, done.stderr
    assert json.loads(running.run("state", "show", "shared/notes").stdout) == {
        "today": "rain",
        "n": 3,
        "list": [1, 2],
    }
    # Agents and other nodes use the `state` agent by message.
    via_agent = running.run("send", "kai://pi1/state", "get", '{"path": "shared/notes/n"}')
    assert json.loads(via_agent.stdout) == 3
    running.run("send", "kai://pi1/state", "set", '{"path": "tasks/t1", "value": {"ok": true}}')
    assert running.json("state", "show")["value"]["tasks"] == {"t1": {"ok": True}}
    export = tmp_path / "state.yjs"
    assert running.run("state", "export", "--format", "yjs", str(export)).returncode == 0
    assert export.stat().st_size > 20
    assert running.run("state", "delete", "shared/notes").returncode == 0
    assert running.run("state", "show", "shared/notes").returncode == ExitCode.USAGE
    imported = running.run("state", "import", "--format", "yjs", str(export))
    assert imported.returncode == 0, imported.stderr
    assert json.loads(running.run("state", "show", "shared/notes/today").stdout) == "rain"
    status = running.json("status")["state"]
    assert status["streams"] == 1 and status["entries"] >= 4


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["state", "set", "shared/big", str(2**64)], "string"),
        (["state", "set", "nowhere/x", "1"], "services"),
        (["state", "set", "shared/x", "{not json"], "JSON"),
        (["state", "show", "shared/missing"], "no such path"),
    ],
)
def test_state_refuses_bad_paths_and_values(running: Home, args: list[str], needle: str) -> None:
    done = running.run(*args)
    assert done.returncode == ExitCode.USAGE, done.stderr
    assert needle in done.stderr and done.stderr.count("\n") == 1


def test_governance_propose_policy_log_and_proposals_on_a_mesh_of_one(running: Home) -> None:
    done = running.run("propose", "policy_update", '{"k": "v"}')
    assert done.returncode == 0, done.stderr
    assert "certified" in done.stdout and "1 of 1" in done.stdout
    assert running.json("policy", "show")["policy"]["k"] == "v"
    assert 'k = "v"' in running.run("policy", "show").stdout
    log = running.json("governance", "log")
    assert [(e["height"], e["kind"], e["body"]) for e in log] == [(1, "policy_update", {"k": "v"})]
    proposals = running.json("proposals")
    assert [(p["id"], p["status"]) for p in proposals] == [(log[0]["id"], "certified")]
    status = running.json("status")["governance"]
    assert status["height"] == 1 and status["head"] == log[0]["id"] and status["threshold"] == 1
    # Voting for a certified proposal is refused, by a unique start of its id.
    again = running.run("vote", log[0]["id"][:8])
    assert again.returncode == ExitCode.USAGE and "certified" in again.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["propose", "bogus", "{}"], "unknown kind"),
        (["propose", "policy_update", "{not json"], "JSON"),
        (["propose", "node_authorization", '{"node_key": "zz", "role": "member"}'], "hex"),
        (["vote", "abcdef"], "no proposal"),
    ],
)
def test_governance_refuses_bad_input_in_one_line(
    running: Home, args: list[str], needle: str
) -> None:
    done = running.run(*args)
    assert done.returncode == ExitCode.USAGE, done.stderr
    assert needle in done.stderr and done.stderr.count("\n") == 1


def test_emergency_shutdown_refuses_every_agent_across_a_restart_until_lifted(home: Home) -> None:
    proc = home.start()
    try:
        assert home.run("send", "kai://pi1/echo", "echo", '"up"').returncode == 0
        done = home.run("propose", "emergency_shutdown", '{"reason": "drill"}')
        assert done.returncode == 0, done.stderr
        refused = home.run("send", "kai://pi1/echo", "echo", '"x"')
        assert refused.returncode == ExitCode.REMOTE_ERROR
        assert "shutdown" in refused.stderr and "drill" in refused.stderr
        assert home.json("status")["governance"]["shutdown"] is True
        assert home.run("stop").returncode == 0
        stop(proc)
        proc = home.start()  # the fold is rebuilt from the stored records: still shut down
        assert home.run("send", "kai://pi1/echo", "echo", '"x"').returncode == ExitCode.REMOTE_ERROR
        assert home.run("propose", "shutdown_lift").returncode == 0
        back = home.run("send", "kai://pi1/echo", "echo", '"back"')
        assert back.returncode == 0 and json.loads(back.stdout) == "back"
        assert [e["kind"] for e in home.json("governance", "log")] == [
            "emergency_shutdown",
            "shutdown_lift",
        ]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        stop(proc)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_node_killed_and_restarted_hears_its_peer_again_at_once() -> None:
    """A gateway that loses power: kill -9, start again. Its peer must announce back at once,
    also when it answered another arrival just before (it used to drop that answer, leaving the
    restarted node deaf until its next announce_interval: ~5 minutes)."""
    with tcp_pair(_free_port()) as (srv, cli):
        procs = [srv.start(), cli.start()]
        try:
            assert wait_for_peer(cli, "srv", 30) is not None
            assert wait_for_peer(srv, "cli", 30) is not None
            for _ in range(2):  # the second restart falls within a minute of the first answer
                procs[1].send_signal(signal.SIGKILL)
                procs[1].wait()
                procs[1] = cli.start()
                heard = wait_for_peer(cli, "srv", 15)
                assert heard is not None, "the restarted node heard nothing of its peer in 15 s"
            done = cli.run("send", "kai://srv/echo", "echo", '"back"')
            assert done.returncode == 0 and json.loads(done.stdout) == "back", done.stderr
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                stop(proc)


def test_services_deploy_show_send_scale_remove(running: Home, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nversion = "1"\nagent = "echo"\nreplicas = { min = 2, max = 1 }\n')
    refused = running.run("services", "deploy", str(bad))
    assert refused.returncode == ExitCode.USAGE
    assert str(bad) in refused.stderr and "replicas.max" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    good = tmp_path / "echo2.toml"
    good.write_text(
        'name = "echo2"\nversion = "1"\nagent = "echo"\n'
        'replicas = { min = 1, max = 2 }\nstrategy = "least_connections"\n'
    )
    filed = running.json("services", "deploy", str(good))
    assert filed["service"] == "echo2" and filed["refused"] is None
    deadline = time.monotonic() + 20
    while True:
        shown = running.json("services", "show", "echo2")
        if [r["state"] for r in shown["replicas"]] == ["ready"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [(r["node"], r["state"]) for r in shown["replicas"]] == [("pi1", "ready")], shown
    answer = running.run("send", "kai://svc/echo2", "echo", '"hi"')
    assert answer.returncode == 0 and json.loads(answer.stdout) == "hi", answer.stderr
    assert [s["name"] for s in running.json("services", "list")["services"]] == ["echo2"]
    (row,) = running.json("agents", "--mesh")
    assert (row["service"], row["node"], row["state"], row["agent"]) == (
        "echo2",
        "pi1",
        "ready",
        "echo2",
    )
    (me,) = running.json("top")["nodes"]
    assert me["node"] == "pi1" and me["local"] and me["cpus"] >= 1 and me["replicas"] == 1
    assert running.json("drain")["draining"] is True
    assert running.json("drain", "--undo")["draining"] is False
    other = running.run("drain", "pi2")
    assert other.returncode == ExitCode.USAGE and "drains itself" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1
    assert running.json("services", "scale", "echo2", "2")["refused"] is None
    assert running.json("services", "remove", "echo2")["refused"] is None
    deadline = time.monotonic() + 20
    while running.json("services", "show", "echo2")["status"] != "removed":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    gone = running.run("send", "kai://svc/echo2", "echo", '"hi"')
    assert gone.returncode != 0 and "no_replica" in gone.stderr + gone.stdout
