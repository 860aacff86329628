"""What the failure detector (`core.liveness.membership`) takes in, asks to send, and reports.

Inputs validate themselves on construction (raise `Malformed`): they come from the wire.
"""

from __future__ import annotations

from dataclasses import dataclass

from kai_mesh.core.errors import Malformed


def _check_id(name: str, value: object) -> None:
    if not isinstance(value, bytes) or not value:
        raise Malformed(f"{name}: must be a non-empty node id (bytes)")


class _Checked:
    """Validation shared by the inputs: node ids are non-empty bytes, counters whole and >= 0."""

    __slots__ = ()

    def __post_init__(self) -> None:
        for name in ("from_id", "target", "node_id"):
            if hasattr(self, name):
                _check_id(name, getattr(self, name))
        for name in ("seq", "incarnation"):
            value = getattr(self, name, 0)
            if type(value) is not int or value < 0:
                raise Malformed(f"{name}: must be a non-negative integer")
        if type(getattr(self, "suspect", False)) is not bool:
            raise Malformed("suspect: must be a bool")


# Inputs: what the shell heard. Each validates itself on construction (raises `Malformed`).


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeReceived(_Checked):
    from_id: bytes
    seq: int
    suspect: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeAcked(_Checked):
    from_id: bytes
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class IndirectProbeRequested(_Checked):
    from_id: bytes
    target: bytes
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class IndirectAckReceived(_Checked):
    from_id: bytes  # the via
    target: bytes
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NackReceived(_Checked):
    from_id: bytes  # the via, which could not reach the target either
    target: bytes
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AliveReceived(_Checked):
    node_id: bytes
    incarnation: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SuspectReceived(_Checked):
    node_id: bytes
    incarnation: int
    from_id: bytes  # the accuser; distinct accusers are Lifeguard's confirmations


@dataclass(frozen=True, slots=True, kw_only=True)
class Heard(_Checked):
    """Authenticated traffic from the peer itself (a signed heartbeat, a message on a verified
    link): proof of life as good as an ack, which costs no airtime of its own."""

    from_id: bytes


Input = (
    Heard
    | ProbeReceived
    | ProbeAcked
    | IndirectProbeRequested
    | IndirectAckReceived
    | NackReceived
    | AliveReceived
    | SuspectReceived
)

# Commands: what the shell should send. `to` tuples may go out as one broadcast on a shared medium.


@dataclass(frozen=True, slots=True, kw_only=True)
class SendProbe:
    to: bytes
    seq: int
    suspect: bool = False  # the buddy system: "you are suspected, refute"


@dataclass(frozen=True, slots=True, kw_only=True)
class SendAck:
    to: bytes
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SendIndirectProbe:
    via: bytes
    target: bytes
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SendIndirectAck:
    to: bytes
    target: bytes
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SendNack:
    to: bytes
    target: bytes
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SendAlive:
    to: tuple[bytes, ...]
    node_id: bytes
    incarnation: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SendSuspect:
    to: tuple[bytes, ...]
    node_id: bytes
    incarnation: int


# Events: what changed, for the runtime to act on and log.


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerSuspected:
    node_id: bytes
    incarnation: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerFailed:
    node_id: bytes
    incarnation: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerRecovered:
    node_id: bytes
    incarnation: int


Command = (
    SendProbe | SendAck | SendIndirectProbe | SendIndirectAck | SendNack | SendAlive | SendSuspect
)
Event = PeerSuspected | PeerFailed | PeerRecovered
Output = Command | Event
