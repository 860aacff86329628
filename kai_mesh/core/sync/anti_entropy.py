"""When to ask a peer to sync: one anti-entropy session machine for every replicated thing.

The replicated state and governance each put a short digest of what they hold on heartbeats and
announces. Hearing a peer's digest that differs from ours means one of us lacks something; the
answer is to ask that peer for a sync session (state: a BUCKETS frame; governance: our head). What
a session carries is the owner's business; *when* to ask is decided here, alike for both:

- A digest equal to ours asks nothing.
- At most one ask per peer per `min_gap` seconds (on a slow radio a session costs airtime), except
  `ask_now` (an operator's `kai-mesh state sync`), which always asks.
- An ask is **in flight** from when it goes until `sync_done(peer)` or `session_timeout` seconds
  later (by default `min_gap`). No second ask goes to a peer while one is in flight. A digest
  that still differs, heard meanwhile, marks the peer *behind*: once the session is done, the peer
  is asked again as soon as `min_gap` allows, if its digest still differs from ours then. A session
  that times out drops that mark: nothing came back, so the next digest heard decides.
- `idle(peers, now, quiet_for)`: peers we have heard no digest from for `quiet_for` seconds (out
  of broadcast range, say) are asked all the same, within the same limits.
- `peer_lost(peer)` forgets a peer.

Transitions, per peer (`free` = not in flight)::

    digest_heard, equal             -> behind := False
    digest_heard, differs, in flight -> behind := True
    digest_heard, differs, free, < min_gap since the last ask -> nothing
    digest_heard, differs, free, >= min_gap   -> AskSync, in flight
    ask_now                         -> AskSync, in flight, behind := False
    sync_done                       -> free; if behind: AskSync at last ask + min_gap
    timer: session_timeout passed   -> free, behind := False

Our own digest comes in by `local_digest`; until then (None) nothing is asked, though digests
heard are kept. Times are floats from one clock the caller owns (trio's, in the shell);
`get_timer()`/`handle_timer(now)` in the manner of aioquic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kai_mesh.core.errors import UsageError


@dataclass(frozen=True, kw_only=True)
class AskSync:
    """Command: ask `peer` for a sync session now."""

    peer: bytes


@dataclass
class _Peer:
    digest: bytes | None = None  # the last digest heard from it
    heard_at: float | None = None
    asked_at: float | None = None
    until: float | None = None  # in flight until then (None: free)
    behind: bool = False  # a differing digest was heard while an ask was in flight


class AntiEntropy:
    """See the module docstring. `min_gap` and `session_timeout` may be changed at any time
    (the wiring raises `min_gap` to the heartbeat interval on slow links)."""

    def __init__(self, *, min_gap: float, session_timeout: float | None = None) -> None:
        if min_gap < 0 or (session_timeout is not None and session_timeout < 0):
            raise UsageError("anti-entropy: min_gap and session_timeout are >= 0 seconds")
        self.min_gap = min_gap
        self._session_timeout = session_timeout
        self._ours: bytes | None = None
        self._peers: dict[bytes, _Peer] = {}

    @property
    def session_timeout(self) -> float:
        """How long an ask stays in flight without `sync_done`; `min_gap` unless set."""
        return self.min_gap if self._session_timeout is None else self._session_timeout

    @session_timeout.setter
    def session_timeout(self, value: float | None) -> None:
        self._session_timeout = value

    # ---- inputs -----------------------------------------------------------------------------

    def local_digest(self, digest: bytes | None) -> None:
        """Our own digest now (None: not ready to sync; digests are kept, nothing is asked)."""
        self._ours = digest

    def digest_heard(self, peer: bytes, digest: bytes, now: float) -> list[AskSync]:
        """A peer's digest, from a heartbeat or an announce."""
        state = self._peers.setdefault(peer, _Peer())
        state.digest, state.heard_at = digest, now
        self._expire(state, now)
        if self._ours is None or digest == self._ours:
            state.behind = False
            return []
        if state.until is not None:
            state.behind = True
            return []
        if not self._gap_passed(state, now):
            return []
        return [self._ask(peer, state, now)]

    def ask_now(self, peer: bytes, now: float) -> AskSync:
        """Ask `peer` whatever the limits (an operator's explicit sync)."""
        state = self._peers.setdefault(peer, _Peer())
        state.behind = False
        return self._ask(peer, state, now)

    def sync_done(self, peer: bytes, now: float) -> list[AskSync]:
        """The session with `peer` ended (it answered in full): it is no longer in flight."""
        state = self._peers.get(peer)
        if state is None:
            return []
        state.until = None
        return self._due(peer, state, now)

    def peer_lost(self, peer: bytes) -> None:
        """Forget `peer` (gone from the mesh, or from our view of it)."""
        self._peers.pop(peer, None)

    def idle(self, peers: Iterable[bytes], now: float, quiet_for: float) -> list[AskSync]:
        """Ask those of `peers` we heard no digest from for more than `quiet_for` seconds (they
        may be out of heartbeat range), within the rate limit and not while one is in flight."""
        asks = []
        for peer in peers:
            state = self._peers.setdefault(peer, _Peer())
            self._expire(state, now)
            if self._ours is None or state.until is not None:
                continue
            quiet = state.heard_at is None or now - state.heard_at > quiet_for
            if quiet and self._gap_passed(state, now):
                asks.append(self._ask(peer, state, now))
        return asks

    # ---- timer ------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When `handle_timer` next has something to do: a session times out, or a peer left
        behind by one that is done may be asked again. None: not until an input comes."""
        times = [t for state in self._peers.values() if (t := self._timer_of(state)) is not None]
        return min(times, default=None)

    def handle_timer(self, now: float) -> list[AskSync]:
        asks = []
        for peer, state in self._peers.items():
            self._expire(state, now)
            asks += self._due(peer, state, now)
        return asks

    # ---- reports ----------------------------------------------------------------------------

    def heard(self, peer: bytes) -> bytes | None:
        """The last digest heard from `peer`."""
        state = self._peers.get(peer)
        return None if state is None else state.digest

    def known(self) -> list[bytes]:
        """Peers we heard a digest from (and have not forgotten)."""
        return [peer for peer, state in self._peers.items() if state.digest is not None]

    def in_flight(self, peer: bytes) -> bool:
        state = self._peers.get(peer)
        return state is not None and state.until is not None

    # ---- transitions ------------------------------------------------------------------------

    def _ask(self, peer: bytes, state: _Peer, now: float) -> AskSync:
        state.asked_at = now
        state.until = now + self.session_timeout
        return AskSync(peer=peer)

    def _gap_passed(self, state: _Peer, now: float) -> bool:
        return state.asked_at is None or now - state.asked_at >= self.min_gap

    def _expire(self, state: _Peer, now: float) -> None:
        """A session in flight past its timeout is over, and says nothing of the peer."""
        if state.until is not None and now >= state.until:
            state.until = None
            state.behind = False

    def _due(self, peer: bytes, state: _Peer, now: float) -> list[AskSync]:
        """A peer left behind by a finished session, asked again once the gap allows."""
        if not state.behind or state.until is not None or not self._gap_passed(state, now):
            return []
        state.behind = False
        if self._ours is None or state.digest == self._ours:
            return []
        return [self._ask(peer, state, now)]

    def _timer_of(self, state: _Peer) -> float | None:
        if state.until is not None:
            return state.until
        if state.behind and state.asked_at is not None:
            return state.asked_at + self.min_gap
        return None
