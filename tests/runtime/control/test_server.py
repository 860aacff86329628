"""The control server against raw sockets and the blocking client, bad input included.

Every test keeps a second, well-behaved client connected across the abuse and checks that it is
still answered: one client's garbage must cost only that client's connection.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import socket
import stat
import struct
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from kai_mesh.client import ControlClient
from kai_mesh.config.socket_path import SocketPathTooLong
from kai_mesh.core.control.errors import ControlError, NodeNotRunning
from kai_mesh.core.control.frames import FrameDecoder, FrameReceived, encode_frame
from kai_mesh.runtime.control.server import ControlServer, EventHub

WAIT = 5.0
MAX_FRAME = 64 * 1024


class FakeNode:
    """A handler with a method for each behaviour the server must cope with."""

    def __init__(self, hub: EventHub) -> None:
        self.hub = hub
        self.gate = trio.Event()
        self.slow_started = trio.Event()

    async def __call__(self, method: str, params: dict[str, Any]) -> Any:
        if method == "echo":
            return params
        if method == "slow":
            self.slow_started.set()
            await self.gate.wait()
            return "slow done"
        if method == "boom":
            raise RuntimeError("kaboom")
        if method == "refuse":
            raise ControlError("no_such_peer", "peer x is unknown")
        if method == "unencodable":
            return {1, 2}
        if method == "huge":
            return "x" * (MAX_FRAME + 1)
        if method == "publish_then_reply":
            self.hub.publish("t", "pushed first")
            # Let the event writer put the push on the wire before this reply.
            await trio.testing.wait_all_tasks_blocked()
            return "replied"
        raise ControlError("unknown_method", f"unknown method {method!r}")


class Raw:
    """A test client speaking the protocol by hand over a trio stream."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder(16 << 20)
        self.frames: list[Any] = []
        self.next_id = 100

    async def send(self, obj: Any) -> None:
        await self.stream.send_all(encode_frame(obj))

    async def request(self, method: str, params: dict[str, Any] | None = None) -> int:
        self.next_id += 1
        await self.send({"id": self.next_id, "method": method, "params": params or {}})
        return self.next_id

    async def receive(self) -> Any:
        with trio.fail_after(WAIT):
            while not self.frames:
                data = await self.stream.receive_some(1 << 16)
                assert data, "server closed the connection"
                for event in self.decoder.feed(data):
                    assert isinstance(event, FrameReceived)
                    self.frames.append(event.value)
        return self.frames.pop(0)

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        request_id = await self.request(method, params)
        reply = await self.receive()
        assert reply["id"] == request_id
        return reply

    async def expect_eof(self) -> None:
        with trio.fail_after(WAIT):
            while True:
                try:
                    data = await self.stream.receive_some(1 << 16)
                except trio.BrokenResourceError:
                    return  # a reset also says the server closed us
                if not data:
                    return
                assert not self.decoder.feed(data), "unexpected frame before EOF"


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # Short and in /tmp: pytest's tmp_path can exceed the Unix socket path limit.
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="kmc"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def hub() -> EventHub:
    return EventHub(queue_size=8)


@pytest.fixture
async def server(nursery: trio.Nursery, sock_dir: Path, hub: EventHub) -> ControlServer:
    srv = ControlServer(sock_dir / "run" / "control.sock", FakeNode(hub), hub, max_frame=MAX_FRAME)
    await nursery.start(srv.serve)
    return srv


@pytest.fixture
async def connect(server: ControlServer) -> AsyncIterator[Any]:
    streams: list[trio.SocketStream] = []

    async def open_raw() -> Raw:
        stream = await trio.open_unix_socket(str(server.path))
        streams.append(stream)
        return Raw(stream)

    yield open_raw
    for stream in streams:
        await stream.aclose()


@pytest.fixture
async def bystander(connect: Any) -> Raw:
    """A client that stays connected through the abuse and must keep being answered."""
    raw: Raw = await connect()
    assert (await raw.call("ping"))["result"] == "pong"
    return raw


async def test_request_and_response(connect: Any) -> None:
    raw = await connect()
    assert (await raw.call("ping")) == {"id": 101, "result": "pong"}
    assert (await raw.call("echo", {"a": [1, b"\x00"]}))["result"] == {"a": [1, b"\x00"]}
    reply = await raw.call("refuse")
    assert reply["error"] == {"code": "no_such_peer", "message": "peer x is unknown"}


async def test_handler_crash_is_an_internal_error(
    connect: Any, server: ControlServer, caplog: pytest.LogCaptureFixture
) -> None:
    raw = await connect()
    with caplog.at_level(logging.ERROR, logger="kai_mesh.runtime.control.server"):
        reply = await raw.call("boom")
    assert reply["error"]["code"] == "internal"
    assert "kaboom" in reply["error"]["message"]
    assert any(r.exc_info for r in caplog.records)
    assert (await raw.call("unencodable"))["error"]["code"] == "internal"
    assert (await raw.call("huge"))["error"]["code"] == "response_too_large"
    assert server.internal_errors == 2
    assert (await raw.call("ping"))["result"] == "pong"


async def test_slow_request_does_not_block_a_fast_one(connect: Any, server: ControlServer) -> None:
    node = server.handler
    assert isinstance(node, FakeNode)
    raw = await connect()
    slow_id = await raw.request("slow")
    with trio.fail_after(WAIT):
        await node.slow_started.wait()
    assert (await raw.call("echo", {"n": 1}))["result"] == {"n": 1}
    node.gate.set()
    assert await raw.receive() == {"id": slow_id, "result": "slow done"}


async def test_subscription_receives_events_in_order(connect: Any, hub: EventHub) -> None:
    raw = await connect()
    reply = await raw.call("subscribe", {"topics": ["peers", "logs"]})
    assert reply["result"] == {"topics": ["logs", "peers"]}
    for n in range(5):
        hub.publish("peers", n)
        hub.publish("other", n)
    for n in range(5):
        assert await raw.receive() == {"event": "peers", "data": n}
    assert (await raw.call("unsubscribe", {"topics": ["peers"]}))["result"] == {"topics": ["logs"]}
    hub.publish("peers", "not for you")
    hub.publish("logs", "for you")
    assert await raw.receive() == {"event": "logs", "data": "for you"}
    assert (await raw.call("subscribe", {"topics": "peers"}))["error"]["code"] == "bad_params"


async def test_slow_subscriber_gets_a_lagged_notice(connect: Any, hub: EventHub) -> None:
    raw = await connect()
    await raw.call("subscribe", {"topics": ["t"]})
    for n in range(100):  # no checkpoint in between: the writer cannot drain the queue (8)
        hub.publish("t", n)
    assert await raw.receive() == {"event": "lagged", "data": {"dropped": 92}}
    assert [(await raw.receive())["data"] for _ in range(8)] == list(range(92, 100))
    assert hub.dropped == 92


async def test_publish_threadsafe_from_a_thread(connect: Any, hub: EventHub) -> None:
    raw = await connect()
    await raw.call("subscribe", {"topics": ["logs"]})
    await trio.to_thread.run_sync(hub.publish_threadsafe, "logs", "from a thread")
    assert await raw.receive() == {"event": "logs", "data": "from a thread"}


def test_publish_threadsafe_without_trio_never_raises() -> None:
    hub = EventHub()
    hub.publish_threadsafe("logs", 1)
    token_holder: list[Any] = []

    async def grab() -> None:
        token_holder.append(trio.lowlevel.current_trio_token())

    trio.run(grab)
    hub.bind(token_holder[0])
    hub.publish_threadsafe("logs", 2)  # the run has finished: RunFinishedError is caught
    assert hub.lost_threadsafe == 2


async def test_socket_file_is_private_and_removed_on_exit(sock_dir: Path, hub: EventHub) -> None:
    path = sock_dir / "home" / "control.sock"
    path.parent.mkdir()
    path.write_text("stale")  # a crashed daemon's leftover is replaced
    srv = ControlServer(path, FakeNode(hub), hub)
    async with trio.open_nursery() as nursery:
        await nursery.start(srv.serve)
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
        nursery.cancel_scope.cancel()
    assert not path.exists()
    srv2 = ControlServer(sock_dir / "new" / "c.sock", FakeNode(hub), hub)
    async with trio.open_nursery() as nursery:
        await nursery.start(srv2.serve)
        assert stat.S_IMODE(os.stat(sock_dir / "new").st_mode) == 0o700
        nursery.cancel_scope.cancel()


async def test_too_long_socket_path_is_a_clear_error(hub: EventHub) -> None:
    path = Path("/tmp/" + "h" * 110 + "/control.sock")
    with pytest.raises(SocketPathTooLong, match="shorter --home") as info:
        await ControlServer(path, FakeNode(hub), hub).serve()
    assert str(path) in str(info.value)
    with pytest.raises(SocketPathTooLong):
        ControlClient(path)


async def test_random_bytes(connect: Any, bystander: Raw, server: ControlServer) -> None:
    raw = await connect()
    await raw.stream.send_all(b"\xde\xad\xbe\xef" + os.urandom(200))
    reply = await raw.receive()
    assert reply["id"] is None and reply["error"]["code"] == "frame_too_large"
    await raw.expect_eof()
    assert server.refused["frame_too_large"] == 1
    assert (await bystander.call("ping"))["result"] == "pong"


async def test_body_that_is_not_msgpack(
    connect: Any, bystander: Raw, server: ControlServer
) -> None:
    raw = await connect()
    await raw.stream.send_all(struct.pack(">I", 3) + b"\xc1\xc1\xc1")
    reply = await raw.receive()
    assert reply["id"] is None and reply["error"]["code"] == "bad_request"
    assert server.refused["bad_request"] == 1
    assert (await raw.call("ping"))["result"] == "pong"  # framing intact: connection still open
    assert (await bystander.call("ping"))["result"] == "pong"


async def test_truncated_frame_then_eof(
    connect: Any, bystander: Raw, server: ControlServer
) -> None:
    raw = await connect()
    frame = encode_frame({"id": 1, "method": "ping"})
    await raw.stream.send_all(frame[:-3])
    await raw.stream.send_eof()
    await raw.expect_eof()  # closed quietly, no reply
    assert server.refused["truncated"] == 1
    assert (await bystander.call("ping"))["result"] == "pong"


async def test_ten_megabyte_frame(connect: Any, bystander: Raw, server: ControlServer) -> None:
    raw = await connect()
    size = 10 * 1024 * 1024

    async def flood() -> None:
        try:
            await raw.stream.send_all(struct.pack(">I", size) + b"\x00" * size)
            await raw.stream.send_eof()
        except trio.BrokenResourceError:
            pass  # the server may close before taking it all; that is allowed

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flood)
        reply = await raw.receive()
        assert reply["error"]["code"] == "frame_too_large"
        await raw.expect_eof()
    assert server.refused["frame_too_large"] == 1
    assert (await bystander.call("ping"))["result"] == "pong"


@pytest.mark.parametrize(
    ("message", "reply_id"),
    [
        ([1, "ping"], None),
        ({"id": 5}, 5),
        ({"id": "5", "method": "ping"}, None),
        ({"id": 5, "method": "echo", "params": [1]}, 5),
    ],
)
async def test_wrong_shape_msgpack(
    connect: Any, bystander: Raw, server: ControlServer, message: Any, reply_id: int | None
) -> None:
    raw = await connect()
    await raw.send(message)
    reply = await raw.receive()
    assert reply == {
        "id": reply_id,
        "error": {"code": "bad_request", "message": reply["error"]["message"]},
    }
    assert server.refused["bad_request"] == 1
    assert (await raw.call("ping"))["result"] == "pong"
    assert (await bystander.call("ping"))["result"] == "pong"


async def test_unknown_method(connect: Any, bystander: Raw, server: ControlServer) -> None:
    raw = await connect()
    assert (await raw.call("frobnicate"))["error"]["code"] == "unknown_method"
    assert server.refused["unknown_method"] == 1
    assert (await bystander.call("ping"))["result"] == "pong"


async def test_an_error_reply_never_echoes_hostile_input_whole(
    connect: Any, server: ControlServer
) -> None:
    raw = await connect()
    name = "m" * (MAX_FRAME - 40)  # the request fits max_frame; an echo of it would not
    await raw.send({"id": 1, "method": name, "params": {}})
    reply = await raw.receive()
    assert reply["error"]["code"] == "unknown_method"
    assert len(reply["error"]["message"]) < 1100 and "more characters" in reply["error"]["message"]


async def test_too_many_clients(sock_dir: Path, hub: EventHub) -> None:
    srv = ControlServer(sock_dir / "c.sock", FakeNode(hub), hub, max_clients=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(srv.serve)
        first = Raw(await trio.open_unix_socket(str(srv.path)))
        assert (await first.call("subscribe", {"topics": ["t"]}))["result"] == {"topics": ["t"]}
        assert srv.clients == 1  # subscribed: busy, so it keeps its slot
        second = Raw(await trio.open_unix_socket(str(srv.path)))
        assert (await second.receive())["error"]["code"] == "too_many_clients"
        await second.expect_eof()
        assert srv.refused["too_many_clients"] == 1
        assert (await first.call("ping"))["result"] == "pong"
        await first.stream.aclose()
        await second.stream.aclose()
        nursery.cancel_scope.cancel()


async def test_idle_connections_never_lock_the_owner_out(sock_dir: Path, hub: EventHub) -> None:
    srv = ControlServer(sock_dir / "c.sock", FakeNode(hub), hub, max_clients=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(srv.serve)
        follower = Raw(await trio.open_unix_socket(str(srv.path)))
        await follower.call("subscribe", {"topics": ["t"]})
        idle = [Raw(await trio.open_unix_socket(str(srv.path))) for _ in range(2)]
        await trio.testing.wait_all_tasks_blocked()
        assert srv.clients == 3
        for _ in range(4):  # each newcomer takes the slot of the one idle longest
            owner = Raw(await trio.open_unix_socket(str(srv.path)))
            assert (await owner.call("ping"))["result"] == "pong"
            idle.append(owner)
        for raw in idle[:4]:
            await raw.expect_eof()
        assert srv.refused["too_many_clients"] == 0 and srv.idle_closed == 4
        assert (await follower.call("ping"))["result"] == "pong"  # subscribed: kept
        for raw in [follower, *idle]:
            await raw.stream.aclose()
        nursery.cancel_scope.cancel()


async def test_a_connection_that_neither_asks_nor_subscribes_is_closed(
    sock_dir: Path, hub: EventHub
) -> None:
    srv = ControlServer(sock_dir / "c.sock", FakeNode(hub), hub, idle_timeout=0.3)
    async with trio.open_nursery() as nursery:
        await nursery.start(srv.serve)
        silent = Raw(await trio.open_unix_socket(str(srv.path)))
        follower = Raw(await trio.open_unix_socket(str(srv.path)))
        await follower.call("subscribe", {"topics": ["t"]})
        await silent.expect_eof()
        await trio.sleep(0.6)
        assert (await follower.call("ping"))["result"] == "pong"
        assert srv.idle_closed == 1
        for raw in (silent, follower):
            await raw.stream.aclose()
        nursery.cancel_scope.cancel()


async def test_sync_client(server: ControlServer, hub: EventHub) -> None:
    def session() -> list[Any]:
        with ControlClient(server.path, timeout=WAIT) as client:
            out: list[Any] = [client.call("ping"), client.call("echo", {"k": "v"})]
            with pytest.raises(ControlError) as info:
                client.call("refuse")
            out.append((info.value.code, info.value.message))
            client.subscribe(["t"])
            # The push arrives before this reply: call() must keep it for events().
            out.append(client.call("publish_then_reply"))
            out.append(list(itertools.islice(client.events(timeout=WAIT), 1)))
            return out

    result = await trio.to_thread.run_sync(session)
    assert result == [
        "pong",
        {"k": "v"},
        ("no_such_peer", "peer x is unknown"),
        "replied",
        [("t", "pushed first")],
    ]


async def test_sync_client_reports_a_missing_node(sock_dir: Path) -> None:
    with pytest.raises(NodeNotRunning):
        ControlClient(sock_dir / "absent.sock")
    stale = sock_dir / "stale.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(stale))  # bound but never listening: connecting is refused
    sock.close()
    with pytest.raises(NodeNotRunning, match="kai-mesh run"):
        ControlClient(stale)
