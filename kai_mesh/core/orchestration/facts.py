"""What a node offers to host replicas: capabilities and capacity (issue 11, item 3).

`NodeFacts` are the node's slow-changing facts: its architecture, cpu count, memory, and its
capabilities — those its config lists (`camera`, `lora`, ...) plus those detected (the
architecture as `arm64`/`amd64`/..., `gpu` when one is present). Placement reads them as the
node's `NodeInfo` (capabilities; cpu and memory offered to replicas). Telemetry (`telemetry.py`)
carries the fast-changing load.

**Wire.** Facts change rarely, so they are not repeated in every telemetry sample: a node sends
them to a peer the first time it hears from that peer's current boot (a restarted peer forgot
them), and to everyone when they change. One format byte, then unsigned LEB128 varints and
length-prefixed names: cpus, memory MiB, flags (1: draining), the arch, the capability count and
names. A Pi, `arm64` with 4 cpus, 8000 MiB, `lora` and `camera`, is 24 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from kai_mesh.core.errors import Malformed, Truncated, UnknownVersion, UsageError
from kai_mesh.core.orchestration.placement import NodeInfo

FACTS_FORMAT = 0x52
MAX_CAPABILITIES = 32
MAX_NAME = 64
MAX_FACTS = 2048

# platform.machine() spellings -> the capability names manifests use.
ARCH_NAMES = {
    "aarch64": "arm64",
    "arm64": "arm64",
    "x86_64": "amd64",
    "amd64": "amd64",
    "armv7l": "armv7",
    "armv6l": "armv6",
    "i686": "386",
    "riscv64": "riscv64",
}


def arch_capability(machine: str) -> str:
    """The capability name of an architecture as `platform.machine()` spells it."""
    m = machine.strip().lower()
    return ARCH_NAMES.get(m, m or "unknown")


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeFacts:
    arch: str
    cpus: int
    memory_mb: int
    capabilities: frozenset[str] = frozenset()
    draining: bool = False  # `kai-mesh drain`: its replicas move away, none are placed here

    def __post_init__(self) -> None:
        if type(self.cpus) is not int or not 1 <= self.cpus <= 4096:
            raise UsageError("node facts: cpus is an integer 1..4096")
        if type(self.memory_mb) is not int or not 1 <= self.memory_mb < 2**40:
            raise UsageError("node facts: memory_mb is a positive integer")
        if len(self.capabilities) > MAX_CAPABILITIES:
            raise UsageError(f"node facts: at most {MAX_CAPABILITIES} capabilities")
        for name in (self.arch, *self.capabilities):
            if not 0 < len(name.encode()) <= MAX_NAME:
                raise UsageError(f"node facts: names are 1..{MAX_NAME} bytes")

    def encode(self) -> bytes:
        out = bytearray([FACTS_FORMAT])
        out += _uvarint(self.cpus) + _uvarint(self.memory_mb) + _uvarint(int(self.draining))
        out += _name(self.arch)
        caps = sorted(self.capabilities)
        out += _uvarint(len(caps))
        for c in caps:
            out += _name(c)
        return bytes(out)

    def node_info(self, base: NodeInfo) -> NodeInfo:
        """`base` (name, role from governance) with these facts: the capabilities (the arch's
        among them) and the cpu and memory offered."""
        return NodeInfo(
            node_id=base.node_id,
            name=base.name,
            role=base.role,
            capabilities=base.capabilities | self.capabilities | {self.arch},
            cpu=float(self.cpus),
            memory_mb=self.memory_mb,
            max_replicas=base.max_replicas,
            draining=base.draining or self.draining,
        )


def decode_facts(data: bytes) -> NodeFacts:
    """Raises `UnknownVersion`, `Truncated` or `Malformed` for anything but encoded facts."""
    if not isinstance(data, bytes | bytearray) or len(data) > MAX_FACTS:
        raise Malformed(f"node facts: expected at most {MAX_FACTS} bytes")
    if not data:
        raise Truncated("node facts: empty input")
    if data[0] != FACTS_FORMAT:
        raise UnknownVersion(f"node facts: format {data[0]} is not known")
    r = _Reader(bytes(data), 1)
    cpus, memory, flags = r.uvarint(), r.uvarint(), r.uvarint()
    if flags > 1:
        raise Malformed("node facts: unknown flags")
    arch = r.name()
    count = r.uvarint()
    if count > MAX_CAPABILITIES:
        raise Malformed("node facts: too many capabilities")
    caps = frozenset(r.name() for _ in range(count))
    if r.pos != len(data):
        raise Malformed("node facts: unexpected bytes after the facts")
    try:
        return NodeFacts(
            arch=arch, cpus=cpus, memory_mb=memory, capabilities=caps, draining=bool(flags)
        )
    except UsageError as exc:
        raise Malformed(str(exc)) from None


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _name(text: str) -> bytes:
    raw = text.encode()
    return bytes([len(raw)]) + raw


class _Reader:
    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise Truncated("node facts: input ended early")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uvarint(self) -> int:
        value = shift = 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise Malformed("node facts: varint too long")

    def name(self) -> str:
        n = self.byte()
        if not 0 < n <= MAX_NAME or self.pos + n > len(self.data):
            raise Malformed("node facts: bad name length")
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise Malformed("node facts: a name is not UTF-8") from None
