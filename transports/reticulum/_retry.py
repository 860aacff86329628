"""When the Reticulum transport gives up waiting and asks again: pure timing, no RNS, no trio.

Two requests can vanish without RNS ever saying so, and the transport repeats them itself:

- A link request can be lost without a word (RNS discards the result of sending it; seen on veth
  under load), and RNS gives up on it only after its own estimate, 12 s on a LAN. On a fast
  one-hop path the transport waits 2, then 3 s (`FAST_LINK_WAIT + attempt`, never longer than
  RNS's estimate) before asking again; its last of `LINK_TRIES` requests, and every request
  anywhere else, waits RNS's estimate (at least 2 s, at most `LINK_WAIT`): a link that is slow to
  set up on a loaded LAN is still made, rather than given up after 9 s.
- RNS drops the path of a link that closes, and a path request lost (in a partition) is never
  asked again. On fast interfaces the transport asks again every `FAST_LINK_WAIT` s for up to
  `PATH_WAIT` s, so a heal is seen at once; with a radio among them it asks only once.

A node that hears a new peer, or one that restarted, announces itself early so that the peer
learns of it now rather than at the next `announce_interval` (300 s by default). Such answers are
spaced `answer_gap` apart (a minute with a radio among the interfaces, where an announce costs
airtime; 5 s otherwise) and one that falls inside the gap is put off to its end, never dropped:
dropping it left a peer restarted within the gap deaf until the next interval.

An idle link is closed by one end only: both ends time it from the same last frame, and when both
close it each sends a close frame (99 bytes, a quarter second of air at SF9/BW250; the emulated
channel showed half of all closes doubled). On a radio the end that opened it closes it after
`RADIO_IDLE` s; the other waits `RESPONDER_GRACE` s more, so it hears that close instead of sending
its own, and closes it itself only if the close was lost or the opener is gone.

Two nodes that open links to each other at once (both heard the other's announce and have
something to send) end up with two verified links between them. Each end used to drop its own
link for the peer's; both then sent a close frame at the same moment, and on a half-duplex radio
the two closes cross and are lost: each end kept sending on the link the other had closed, and
nothing came through until RNS timed the link out minutes later. Now no end closes a verified
link for this: both links stay valid at both ends, and each end sends on the one `keep_current_link`
picks — when both verified within `CROSSING_WINDOW` s of each other, the one the smaller node id
opened, which both ends agree on, so the other idles out unused and its opener closes it; when
the current one is older, the newer (the peer restarted, or the old one went quiet).

The transport reads the bitrates, hop count and RNS's estimate and passes them in, so these rules
are tested with plain numbers (`tests/transports/test_reticulum_retry.py`).
"""

from __future__ import annotations

from collections.abc import Iterable

RADIO_BITRATE = 1_000_000  # below this an interface counts as a radio: links closed sooner
LINK_WAIT = 20.0  # longest wait for a link to establish, then for its handshake
FAST_LINK_WAIT = 2.0  # first wait for a link on a fast one-hop path (then 3 s)
LINK_TRIES = 3  # link requests per attempt to reach a peer; the last waits RNS's estimate
PATH_WAIT = 15.0  # longest wait for a path to a peer
ANSWER_GAP = 60.0  # least time between two early announces with a radio among the interfaces
FAST_ANSWER_GAP = 5.0  # the same on fast interfaces only

RADIO_IDLE = 120.0  # seconds without traffic before the opener closes a link over a radio
LAN_IDLE = 900.0  # the same over fast interfaces
RESPONDER_GRACE = 60.0  # the other end waits this much longer on a radio
CROSSING_WINDOW = 2 * LINK_WAIT  # two links verified this close together crossed


def establish_wait(rns_estimate: float, bitrate: float | None, hops: int, attempt: int) -> float:
    """Seconds to wait for link request number `attempt` (from 0) to establish before dropping
    it: `rns_estimate` is RNS's own establishment timeout for it, `bitrate` that of the next hop's
    interface (None if unknown: not fast) and `hops` the path's length."""
    rns_limit = min(LINK_WAIT, rns_estimate)
    if (bitrate or 0) >= RADIO_BITRATE and hops <= 1 and attempt < LINK_TRIES - 1:
        return min(rns_limit, FAST_LINK_WAIT + attempt)
    return max(2.0, rns_limit)


def path_request_interval(bitrates: Iterable[float | None]) -> float:
    """Seconds between two requests for the same path, given the bitrates of every interface
    (None if unknown: not fast). `PATH_WAIT`, the whole wait, means: ask once."""
    fast = all((bitrate or 0) >= RADIO_BITRATE for bitrate in bitrates)
    return FAST_LINK_WAIT if fast else PATH_WAIT


def answer_gap(bitrates: Iterable[float | None]) -> float:
    """Least seconds between two announces made early to answer a new or restarted peer, given
    the bitrates of every interface (None if unknown: not fast)."""
    fast = all((bitrate or 0) >= RADIO_BITRATE for bitrate in bitrates)
    return FAST_ANSWER_GAP if fast else ANSWER_GAP


def idle_close_after(radio: bool, outbound: bool) -> float:
    """Seconds without traffic after which this end closes a link: `radio` if the link runs over
    a radio interface, `outbound` if this end opened it."""
    if not radio:
        return LAN_IDLE
    return RADIO_IDLE if outbound else RADIO_IDLE + RESPONDER_GRACE


def keep_current_link(
    current_opener: bytes, current_verified_at: float, new_opener: bytes, now: float
) -> bool:
    """Whether to go on sending on the current verified link to a peer when another one to it
    has just verified: `*_opener` is the node id of the end that opened each link, and
    `current_verified_at` when the current one verified. Links that crossed (verified within
    `CROSSING_WINDOW` s) settle on the one the smaller node id opened; otherwise the newer wins."""
    if now - current_verified_at > CROSSING_WINDOW:
        return False
    return current_opener < new_opener
