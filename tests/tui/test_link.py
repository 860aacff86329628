"""The link's coalescing against a real node: a storm of pushes costs a few refetches, one per
part per `gap` at most, and a `state` push naming its paths refetches those paths, not the
whole document."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from kai_mesh.client import ControlClient
from tests.cli.helpers import Home
from tests.tui.conftest import on_asyncio, socket_of
from tui.link import NodeLink
from tui.model import NodeView

pytestmark = pytest.mark.slow


async def _until(cond: object, wait: float = 10.0) -> None:
    deadline = time.monotonic() + wait
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not true in time"
        await asyncio.sleep(0.02)


def _writes(home: Home, count: int) -> float:
    """`count` state writes (each a `state` push naming its path), as fast as they go."""
    started = time.monotonic()
    with ControlClient(socket_of(home)) as client:
        for n in range(count):
            client.call("state_set", {"path": "shared/counter", "value": n})
        client.call("send", {"to": "kai://alpha/echo", "intent": "echo", "payload": 1})
    return time.monotonic() - started


@on_asyncio
async def test_a_storm_of_state_pushes_costs_a_few_path_fetches(node: Home) -> None:
    view = NodeView()
    link = NodeLink(socket_of(node), view, poll=60.0, settle=0.05, gap=0.5)
    task = asyncio.ensure_future(link.run())
    try:
        await _until(lambda: view.connected)
        assert link.fetches["doc_whole"] == 1
        events_before = view.events_seen
        took = await asyncio.to_thread(_writes, node, 150)
        await _until(lambda: (view.doc or {}).get("shared", {}).get("counter") == 149)
        assert view.events_seen - events_before >= 150  # every push reached the link
        # Coalesced: one round per gap (plus the first and the last), never one per push.
        assert link.fetches["doc"] <= took / link.gap + 3, (link.fetches, took)
        assert link.fetches["doc_whole"] == 1  # the paths were patched in, the doc never refetched
        assert link.fetches["status"] == 1  # pushes do not drag the polled parts along
        assert view.version > 0 and view.lines_added >= 150
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@on_asyncio
async def test_a_peer_change_without_paths_refetches_the_whole_document(node: Home) -> None:
    view = NodeView()
    link = NodeLink(socket_of(node), view, poll=60.0, settle=0.05, gap=0.2)
    task = asyncio.ensure_future(link.run())
    try:
        await _until(lambda: view.connected)
        link._on_event("state", {"event": "changed", "origin": "ab" * 16, "entries": 1})
        await _until(lambda: link.fetches["doc_whole"] == 2)
        link._on_event("state", {"event": "changed", "origin": "local", "paths": ["shared/x"]})
        await _until(lambda: link.fetches["doc_whole"] == 3)  # no shared/x: refetched whole
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
