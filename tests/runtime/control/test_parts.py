"""Issue 15, finding 12: a result larger than the server's `max_frame` (a state export past
1 MiB) reaches a client that asks for parts, in frames that each fit; a client that does not ask
gets `response_too_large` as before."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from kai_mesh.client import ControlClient
from kai_mesh.core.control.frames import HEADER_SIZE, FrameDecoder, FrameReceived, encode_frame
from kai_mesh.runtime.control.server import ControlServer, EventHub

MAX_FRAME = 64 * 1024
BIG = os.urandom(5 * MAX_FRAME + 123)


async def handler(method: str, params: dict[str, Any]) -> Any:
    if method == "export":
        return {"update": BIG, "bytes": len(BIG)}
    if method == "show":
        return {"value": {f"k{i}": [i, "v" * 100] for i in range(3000)}}
    return "pong"


@pytest.fixture
async def server(nursery: trio.Nursery) -> AsyncIterator[ControlServer]:
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="kmp"))
    srv = ControlServer(path / "control.sock", handler, EventHub(), max_frame=MAX_FRAME)
    await nursery.start(srv.serve)
    yield srv
    shutil.rmtree(path, ignore_errors=True)


async def test_the_blocking_client_gets_a_result_larger_than_a_frame(server: ControlServer) -> None:
    def session() -> tuple[Any, Any, Any]:
        with ControlClient(server.path, timeout=10) as client:
            return client.call("export"), client.call("show"), client.call("ping")

    export, show, small = await trio.to_thread.run_sync(session)
    assert export == {"update": BIG, "bytes": len(BIG)}
    assert len(show["value"]) == 3000 and show["value"]["k7"] == [7, "v" * 100]
    assert small == "pong"


async def test_parts_each_fit_and_an_old_client_still_gets_response_too_large(
    server: ControlServer,
) -> None:
    stream = await trio.open_unix_socket(str(server.path))
    decoder = FrameDecoder(MAX_FRAME)  # a client that accepts no more than the server sends

    async def frames_until(request_id: int) -> list[Any]:
        got: list[Any] = []
        with trio.fail_after(10):
            while not any(f.get("id") == request_id and "part" not in f for f in got):
                data = await stream.receive_some(1 << 16)
                for event in decoder.feed(data):
                    assert isinstance(event, FrameReceived), event
                    got.append(event.value)
        return got

    await stream.send_all(encode_frame({"id": 1, "method": "export"}))  # no parts: as before
    (old,) = await frames_until(1)
    assert old["error"]["code"] == "response_too_large"
    await stream.send_all(encode_frame({"id": 2, "method": "export", "parts": True}))
    got = await frames_until(2)
    parts = [f["part"] for f in got if "part" in f]
    assert len(parts) == 6 and all(len(p) + HEADER_SIZE <= MAX_FRAME for p in parts)
    assert got[-1]["parts_end"]["count"] == 6
    await stream.aclose()
