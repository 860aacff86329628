"""`kai-mesh events --mesh` and `kai-mesh publish` against a real node (a mesh of one)."""

from __future__ import annotations

import json
import selectors
import signal
import subprocess
import time

from kai_mesh.cli.main import ExitCode
from tests.cli.helpers import (
    KAI_MESH,
    Home,
    _env,
)


def _first_line(proc: subprocess.Popen[str], poke: list[str], home: Home) -> str:
    """Publish with `poke` until the follower prints (it may subscribe after the first)."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert home.run(*poke).returncode == 0
        if sel.select(timeout=0.5):
            return proc.stdout.readline()
    raise AssertionError("the follower printed nothing")


def test_follow_a_topic_and_publish_from_the_cli_and_from_an_agent(running: Home) -> None:
    follow = subprocess.Popen(
        [*KAI_MESH, "--home", str(running.path), "events", "--mesh", "camera.motion", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        line = _first_line(follow, ["publish", "camera.motion", '{"zone": 3}'], running)
        event = json.loads(line)
        assert event["topic"] == "camera.motion" and event["fields"] == {"zone": 3}
        assert event["origin_name"] in (None, "pi1") and len(event["origin"]) == 32
        # An agent publishes through the node's `events` agent.
        sent = running.run(
            "send",
            "kai://pi1/events",
            "publish",
            '{"topic": "camera.motion", "fields": {"zone": "agent"}}',
        )
        assert sent.returncode == 0, sent.stderr
        assert follow.stdout is not None
        for _ in range(20):  # earlier pokes may still be queued ahead of it
            event = json.loads(follow.stdout.readline())
            if event["fields"] == {"zone": "agent"}:
                break
        else:
            raise AssertionError("the agent's event never came")
    finally:
        follow.send_signal(signal.SIGINT)
        follow.wait(10)
    status = running.json("status")["events"]
    assert status["published"] >= 2


def test_bad_topic_and_fields_are_one_line_and_exit_2(running: Home) -> None:
    bad = running.run("publish", "no spaces", "{}")
    assert bad.returncode == ExitCode.USAGE and len(bad.stderr.strip().splitlines()) == 1
    bad = running.run("publish", "ok.topic", "[1, 2]")
    assert bad.returncode == ExitCode.USAGE and "fields" in bad.stderr
    bad = running.run("events", "--mesh", "bad topic")
    assert bad.returncode == ExitCode.USAGE and "topic" in bad.stderr
    big = running.run("publish", "ok.topic", json.dumps({"x": "y" * 500}))
    assert big.returncode == ExitCode.USAGE and "400" in big.stderr, big.stderr
