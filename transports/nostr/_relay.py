"""One relay connection, and the pool that keeps several of them, over trio-websocket.

A `Relay` owns its connection: `run()` connects, reads the relay's NIP-11 document first (only
`limitation.max_message_length` is used; a relay without NIP-11, like nostr-sdk's LocalRelay, keeps
the default), sends every subscription the pool holds (so subscriptions are restored on each
reconnect, as nostr-tools does), pings every 55 s, reads until the connection drops, then waits
`_policy.retry_interval` and tries again — forever, until cancelled.

Subscribe before publishing, per connection: a publish waits (bounded) until every REQ sent on
this connection has settled — its EOSE, or a CLOSED for a reason other than AUTH. A relay that
wants NIP-42 closes REQs sent before AUTH with `auth-required:`; those are re-sent once the AUTH
is accepted, and stay unsettled until their EOSE. Without this, a hello published right after
AUTH reached the relay before our subscriptions were back, the other member's hello (ephemeral,
never stored) found no subscription, and two nodes on an AUTH relay did not meet until the next
hello interval (the NIP-42 test failed one run in two).

Publishing waits for the relay's `OK` (bounded: nostr-rs-relay never answers one for an ephemeral
event, so a timeout means "sent, unconfirmed", not failure). `auth-required:` is answered by
waiting for the NIP-42 AUTH this relay asked for and retrying once (nostr-tools' rule);
`rate-limited:` backs this relay off. Each refusal is counted by its machine-readable prefix.

The `RelayPool` publishes to every connected relay at once and returns as soon as one healthy
relay (not demoted: `_policy.demoted`) accepted, so a slow or refusing relay costs only itself.
What arrives goes to the pool's `handler`; checking it is the transport's business.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from kai_mesh.core.nostr.event import Event
from transports.nostr import _policy

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE = 65_536 + 1024  # strfry's 64 KiB event plus the ["EVENT", …] frame
MAX_INBOUND = 1 << 20  # a relay message larger than this closes the connection
CONNECT_TIMEOUT = 10.0
OK_TIMEOUT = 10.0
NIP11_TIMEOUT = 5.0
NIP11_MAX = 64 * 1024

#: Called with (relay, subscription id, event object) for each EVENT a relay sends.
EventHandler = Callable[["Relay", str, Any], None]
#: Builds the NIP-42 AUTH event (kind 22242) for (relay url, challenge).
AuthSigner = Callable[[str, str], Event]


@dataclass(frozen=True, slots=True)
class Published:
    """What one relay said to one event: accepted (OK true), or not with its reason."""

    relay: str
    accepted: bool
    reason: str = ""  # "duplicate", "rate-limited", "no_ok", "not_connected", …


@dataclass(slots=True)
class RelayStats:
    attempts: int = 0
    successes: int = 0
    sent: int = 0
    accepted: int = 0
    received: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    latency: float | None = None  # seconds, the last websocket ping's round trip
    bytes_sent: int = 0  # UTF-8 bytes of every message we sent (EVENT, REQ, AUTH …)
    bytes_received: int = 0  # UTF-8 bytes of every text message the relay sent


class Relay:
    """One relay (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        handler: EventHandler,
        signer: AuthSigner,
        subscriptions: Mapping[str, dict[str, Any]],
        rng: random.Random,
        ok_timeout: float = OK_TIMEOUT,
        ping_interval: float = _policy.PING_INTERVAL,
        on_change: Callable[[], None] = lambda: None,
        read: bool = True,
        write: bool = True,
    ) -> None:
        self.url = url
        self.read, self.write = read, write  # NIP-65: subscribed on, published to
        self.stats = RelayStats()
        self.max_message_length = DEFAULT_MAX_MESSAGE
        self.backoff = _policy.RateLimitBackoff()
        self._handler = handler
        self._signer = signer
        self._subscriptions = subscriptions  # the pool's, live
        self._rng = rng
        self._ok_timeout = ok_timeout
        self._ping_interval = ping_interval
        self._on_change = on_change
        self._ws: Any = None
        self._nursery: trio.Nursery | None = None
        self._pending: dict[str, tuple[trio.Event, list[tuple[bool, str]]]] = {}
        self._authed = trio.Event()
        self._unsettled: set[str] = set()  # REQs sent on this connection, no EOSE/CLOSED yet
        self._auth_closed: set[str] = set()  # REQs the relay closed with auth-required
        self._settled = trio.Event()
        self.connected = trio.Event()

    @property
    def is_connected(self) -> bool:
        return self._ws is not None

    @property
    def demoted(self) -> bool:
        return _policy.demoted(self.stats.attempts, self.stats.successes)

    def _refused(self, reason: str) -> None:
        self.stats.refused[reason] = self.stats.refused.get(reason, 0) + 1

    # ---- the connection -----------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, reconnect with backoff; returns only when cancelled."""
        while True:
            self.stats.attempts += 1
            try:
                await self._connect_once()
            # except*: trio-websocket's nursery may wrap these in an ExceptionGroup.
            except* (OSError, HandshakeError, ConnectionClosed, trio.TooSlowError) as group:
                log.info("relay %s: %s", self.url, group.exceptions[0])
            wait = _policy.retry_interval(
                self.stats.attempts, self.stats.successes, self._rng.uniform(-1, 1)
            )
            await trio.sleep(wait)

    async def _connect_once(self) -> None:
        limit = await fetch_max_message_length(self.url)
        if limit is not None:
            self.max_message_length = limit
        async with open_websocket_url(
            self.url,
            max_message_size=MAX_INBOUND,
            message_queue_size=64,
            connect_timeout=CONNECT_TIMEOUT,
            disconnect_timeout=1.0,
        ) as ws:
            self.stats.successes += 1
            self._ws, self._authed = ws, trio.Event()
            self._unsettled, self._auth_closed = set(), set()
            self._settled = trio.Event()
            try:
                for sub_id, flt in list(self._subscriptions.items()):
                    await self.subscribe(sub_id, flt)
                self._check_settled()
                self.connected.set()
                self._on_change()
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._ping_loop, ws, nursery.cancel_scope)
                    await self._read_loop(ws)
                    nursery.cancel_scope.cancel()
            finally:
                self._ws, self._nursery = None, None
                self.connected = trio.Event()
                self._on_change()
                for done, result in self._pending.values():
                    result.append((False, "not_connected"))
                    done.set()

    async def _ping_loop(self, ws: Any, done: trio.CancelScope) -> None:
        """A websocket ping every interval; no pong in time closes the connection."""
        while True:
            await trio.sleep(self._ping_interval)
            start = trio.current_time()
            try:
                with trio.fail_after(self._ok_timeout):
                    await ws.ping()
            except (ConnectionClosed, trio.TooSlowError):
                self._refused("ping_timeout")
                done.cancel()
                return
            self.stats.latency = trio.current_time() - start

    async def _read_loop(self, ws: Any) -> None:
        while True:
            try:
                text = await ws.get_message()
            except ConnectionClosed:
                return
            if isinstance(text, bytes):
                self._refused("relay_malformed")
                continue
            self.stats.bytes_received += len(text.encode())
            try:
                msg = json.loads(text)
            except (ValueError, TypeError):
                self._refused("relay_malformed")
                continue
            if not isinstance(msg, list) or not msg or not isinstance(msg[0], str):
                self._refused("relay_malformed")
                continue
            self._on_message(msg)

    def _on_message(self, msg: list[Any]) -> None:
        kind = msg[0]
        if kind == "EVENT" and len(msg) == 3 and isinstance(msg[1], str):
            self.stats.received += 1
            self._handler(self, msg[1], msg[2])
        elif kind == "OK" and len(msg) >= 3 and isinstance(msg[1], str):
            waiting = self._pending.get(msg[1])
            if waiting is not None:
                reason = msg[3] if len(msg) > 3 and isinstance(msg[3], str) else ""
                waiting[1].append((msg[2] is True, reason))
                waiting[0].set()
        elif kind == "AUTH" and len(msg) == 2 and isinstance(msg[1], str):
            if self._nursery is not None:
                self._nursery.start_soon(self._authenticate, msg[1])
        elif kind == "EOSE" and len(msg) == 2 and isinstance(msg[1], str):
            self._unsettled.discard(msg[1])
            self._check_settled()
        elif kind == "CLOSED" and len(msg) >= 2 and isinstance(msg[1], str):
            reason = _prefix(msg[2] if len(msg) > 2 and isinstance(msg[2], str) else "")
            self._refused("closed:" + reason)
            if reason == "auth-required" and msg[1] in self._subscriptions:
                self._auth_closed.add(msg[1])  # re-sent after AUTH: stays unsettled
            else:
                self._unsettled.discard(msg[1])
                self._check_settled()
        elif kind == "NOTICE":
            log.debug("relay %s notice: %s", self.url, msg[1:])
        elif kind not in ("COUNT", "NEG-MSG", "NEG-ERR"):  # answers to what we never ask
            self._refused("relay_malformed")  # an unknown message, or a known one misshapen

    async def _authenticate(self, challenge: str) -> None:
        """NIP-42: sign the challenge; once the relay accepts, restore the subscriptions (a
        relay that wants AUTH closes REQs sent before it with `auth-required:`). Runs beside the
        read loop, which delivers the OK it waits for."""
        auth = self._signer(self.url, challenge)
        ok, _ = await self._send_and_wait(["AUTH", auth.to_json()], auth.id)
        if not ok:
            self._refused("auth_failed")
            return
        # Only the REQs the relay closed for want of AUTH are re-sent (a relay sends a new
        # challenge with each closure: re-sending all on each AUTH would replace live ones).
        # Publishes wait for their EOSE (`_wait_settled`).
        closed, self._auth_closed = self._auth_closed, set()
        for sub_id in closed:
            flt = self._subscriptions.get(sub_id)
            if flt is not None:
                await self.subscribe(sub_id, flt)
        self._authed.set()

    def _check_settled(self) -> None:
        if not self._unsettled:
            self._settled.set()
        elif self._settled.is_set():
            self._settled = trio.Event()

    async def _wait_settled(self) -> None:
        """Until this connection's REQs are in place (bounded by the OK timeout: a relay that
        never answers a REQ does not stop us publishing)."""
        with trio.move_on_after(self._ok_timeout):
            while not self._settled.is_set():
                await self._settled.wait()

    async def _send(self, msg: list[Any]) -> None:
        ws = self._ws
        if ws is None:
            raise ConnectionClosed(None)
        text = json.dumps(msg, separators=(",", ":"), ensure_ascii=False)
        self.stats.bytes_sent += len(text.encode())
        await ws.send_message(text)

    async def _send_and_wait(self, msg: list[Any], event_id: str) -> tuple[bool, str]:
        done, result = trio.Event(), list[tuple[bool, str]]()
        self._pending[event_id] = (done, result)
        try:
            await self._send(msg)
            with trio.move_on_after(self._ok_timeout):
                await done.wait()
        except ConnectionClosed:
            return False, "not_connected"
        finally:
            self._pending.pop(event_id, None)
        if not result:
            return True, "no_ok"  # nostr-rs-relay sends none for ephemeral events
        return result[0]

    # ---- what the pool calls ------------------------------------------------------------------

    async def subscribe(self, sub_id: str, flt: dict[str, Any]) -> None:
        """Send a REQ now if connected (the pool's map restores it on every reconnect); a relay
        we only write to gets none."""
        if self._ws is not None and self.read:
            self._unsettled.add(sub_id)
            self._check_settled()
            with contextlib.suppress(ConnectionClosed):
                await self._send(["REQ", sub_id, flt])

    async def publish(self, event: Event, text_length: int) -> Published:
        """Send `event`, wait for the relay's answer; never raises for the relay's sake."""
        if self._ws is None:
            return Published(self.url, False, "not_connected")
        if not self.write:
            return Published(self.url, False, "read_only")
        if text_length > self.max_message_length:
            self._refused("too_large_for_relay")
            return Published(self.url, False, "too_large_for_relay")
        await self._wait_settled()
        await trio.sleep(self.backoff.wait(trio.current_time()))
        result = await self._publish_once(event)
        if not result.accepted and result.reason == "auth-required":
            with trio.move_on_after(self._ok_timeout):
                await self._authed.wait()
            result = await self._publish_once(event)  # once, as nostr-tools does
        return result

    async def _publish_once(self, event: Event) -> Published:
        self.stats.sent += 1
        ok, message = await self._send_and_wait(["EVENT", event.to_json()], event.id)
        if ok:
            self.stats.accepted += 1
            self.backoff.accepted()
            return Published(self.url, True, message)
        reason = _prefix(message)
        if reason == "duplicate":  # the relay has it already: as good as accepted
            self.stats.accepted += 1
            return Published(self.url, True, reason)
        if reason == "rate-limited":
            self.backoff.limited(trio.current_time())
        self._refused(reason or "refused")
        return Published(self.url, False, reason or "refused")


def _prefix(message: str) -> str:
    """The machine-readable prefix of a NIP-01 OK/CLOSED message ("blocked: spam" → "blocked")."""
    head, sep, _ = message.partition(":")
    return head.strip() if sep and head.strip().replace("-", "").isalnum() else ""


async def fetch_max_message_length(url: str) -> int | None:
    """NIP-11: `limitation.max_message_length` from the relay's information document, or None
    when it has none, cannot be read in `NIP11_TIMEOUT`, or makes no sense.

    A bare HTTP/1.0 GET (the server closes after one answer, so neither keep-alive nor chunked
    encoding arises); TLS for wss://."""
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    request = (
        f"GET {parts.path or '/'} HTTP/1.0\r\nHost: {parts.netloc}\r\n"
        "Accept: application/nostr+json\r\n\r\n"
    ).encode()
    body = b""
    with trio.move_on_after(NIP11_TIMEOUT):
        try:
            stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
            if secure:
                stream = trio.SSLStream(stream, ssl.create_default_context(), server_hostname=host)
            async with stream:
                await stream.send_all(request)
                while len(body) <= NIP11_MAX:
                    chunk = await stream.receive_some(8192)
                    if not chunk:
                        break
                    body += chunk
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            return None
    head, _, payload = body.partition(b"\r\n\r\n")
    if not head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")):
        return None
    try:
        doc = json.loads(payload)
        value = doc["limitation"]["max_message_length"]
    except (ValueError, KeyError, TypeError):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 1024 <= value <= MAX_INBOUND:
        return value
    return None
