"""The project's exceptions, rooted at `KaiMeshError`.

Each class says whose fault it is and what to do next, in the manner of h11's
LocalProtocolError / RemoteProtocolError split: `ProtocolError` is bytes or objects that came from
somewhere else and were refused; `UsageError` is a caller's mistake on this node.
"""

from __future__ import annotations


class KaiMeshError(Exception):
    """Root of every error kai-mesh raises on purpose."""


class UsageError(KaiMeshError, ValueError):
    """A value given by the local caller (CLI argument, API argument) is not acceptable."""


class AddressError(UsageError):
    """A `kai://` address does not parse."""


class ConfigError(KaiMeshError):
    """The configuration file is broken; the message names the file, the key and the problem."""


class StoreError(KaiMeshError):
    """The node's data directory or database cannot be used."""


class TransportError(KaiMeshError):
    """A transport failed to start or to carry a message."""


class NameMismatch(TransportError):
    """A node announced a name its signed member record does not give it."""


class ProtocolError(KaiMeshError):
    """Bytes or an object from outside were refused. Subclasses say why."""

    #: Short machine-readable reason, used as a counter name in `kai-mesh status`.
    reason = "malformed"


class UnknownVersion(ProtocolError):
    """The leading format byte names a format this node does not speak."""

    reason = "unknown_version"


class Truncated(ProtocolError):
    """The input ended before the object did."""

    reason = "truncated"


class Malformed(ProtocolError):
    """A field is missing, has the wrong type, or is out of range."""

    reason = "malformed"


class Oversize(ProtocolError):
    """The input is larger than the configured limit."""

    reason = "oversize"


class BadSignature(ProtocolError):
    """A signature does not verify, or its signer is unknown."""

    reason = "bad_signature"


class Untrusted(ProtocolError):
    """A well-formed, correctly signed object from a key this mesh does not trust."""

    reason = "untrusted"


class Expired(ProtocolError):
    """The message's `expires_at` has passed."""

    reason = "expired"


class ClockSkew(ProtocolError):
    """The message is stamped further in the future than the policy's `max_clock_skew`: the
    sender's clock, or ours, is wrong (or the stamp is hostile: it would never expire)."""

    reason = "clock_skew"


class Replay(ProtocolError):
    """The same `(from, message_id)` was accepted before and has not expired yet."""

    reason = "replay"
