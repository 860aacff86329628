"""Governance sync frames: records passed on, and the ask for what follows a head.

Two messages travel behind the GOVERNANCE frame byte (`core.messaging.frames`)::

    records  0x15 ‖ msgpack [1, [record, …]]   at most MAX_RECORDS signed records
    ask      0x15 ‖ msgpack [2, head]          head: the asker's 32-byte head id

A node whose governance digest differs from a peer's sends it an ask with its head; the peer
answers with what the asker may lack (`Governance.objects_after`) in records frames, chunked so
that each fits a link packet (`chunk_records`; a record larger than the limit goes alone). A
record made here, or newly kept, is pushed in a records frame of its own. The records themselves
are checked by the machine (`core.governance.machine`), not here: this module only frames them.

Pure: bytes in, values out. `decode_sync` raises a `ProtocolError` subclass for bad bytes and
nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kai_mesh.core.codec import pack, split_format, unpack_exact
from kai_mesh.core.errors import Malformed
from kai_mesh.core.governance.wire import ID_BYTES, MAX_PROPOSAL
from kai_mesh.core.messaging.frames import FRAME_GOVERNANCE

MSG_RECORDS = 1
MSG_ASK = 2
MAX_RECORDS = 64  # records in one frame we accept


@dataclass(frozen=True, kw_only=True)
class Records:
    """Governance records (proposals, votes, redemptions), as signed bytes."""

    records: tuple[bytes, ...]


@dataclass(frozen=True, kw_only=True)
class AskAfter:
    """ "Send me what follows `head`": the asker's head, so the peer answers with the rest."""

    head: bytes


SyncMessage = Records | AskAfter


def encode_records(records: Sequence[bytes]) -> bytes:
    """A records frame."""
    return bytes([FRAME_GOVERNANCE]) + pack([MSG_RECORDS, list(records)])


def encode_ask(head: bytes) -> bytes:
    """An ask frame for what follows `head`."""
    return bytes([FRAME_GOVERNANCE]) + pack([MSG_ASK, head])


def decode_sync(data: bytes) -> SyncMessage:
    """The message in a governance frame.

    Raises:
        UnknownVersion: not a GOVERNANCE frame. Truncated: empty, or the msgpack value is cut.
        Malformed: anything else about the value (shape, types, sizes, an unknown message).
    """
    rest = split_format(data, FRAME_GOVERNANCE, "governance sync")
    value = unpack_exact(rest, MAX_PROPOSAL + 16)
    if not isinstance(value, list) or len(value) != 2:
        raise Malformed("a governance frame is [kind, value]")
    kind, body = value
    if kind == MSG_RECORDS:
        if not isinstance(body, list) or len(body) > MAX_RECORDS:
            raise Malformed(f"records: a list of at most {MAX_RECORDS}")
        if not all(isinstance(r, bytes) for r in body):
            raise Malformed("records: each is bytes")
        return Records(records=tuple(body))
    if kind == MSG_ASK:
        if not isinstance(body, bytes) or len(body) != ID_BYTES:
            raise Malformed(f"ask: a head of {ID_BYTES} bytes")
        return AskAfter(head=body)
    raise Malformed(f"unknown governance message {kind!r}")


def chunk_records(records: Sequence[bytes], limit: int) -> list[list[bytes]]:
    """`records` in order, grouped so that each records frame stays within `limit` bytes (a
    record too large for that goes alone)."""
    chunks: list[list[bytes]] = []
    current: list[bytes] = []
    for record in records:
        if current and len(encode_records([*current, record])) > limit:
            chunks.append(current)
            current = []
        current.append(record)
    if current:
        chunks.append(current)
    return chunks
