"""What the agent host is built from: its errors, the agent spec, and the three runners.

See `kai_mesh.runtime.agents.host` for how the host supervises them. The runners:

- inline: `handle` runs in the caller's trio task. No timeout is possible, so this is for trusted
  built-ins that never block (echo); the path is kept to a dict lookup and a call for the bus's
  throughput.
- thread: `handle` runs in `trio.to_thread` under a per-incarnation `CapacityLimiter`. A request
  that overruns is abandoned (Python cannot kill a thread); the instance, which may be wedged, is
  dropped with its limiter, whose tokens the abandoned threads still hold.
- process: a worker process speaking JSON lines (`kai_mesh.runtime.agents.worker` for Python
  classes, or any external command). A request that overruns gets the process SIGKILLed; garbage,
  oversized lines and exits also end the incarnation.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import trio

from kai_mesh.agents.base import Agent, AgentRejected, AgentRequest
from kai_mesh.core.errors import KaiMeshError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "kai_mesh.agents"
#: This package's own agents, as its entry points name them (pyproject.toml; a test keeps the two
#: alike): found without scanning every installed distribution at start-up.
BUILTIN_AGENTS = {
    "echo": "kai_mesh.agents.echo:EchoAgent",
    "sysinfo": "kai_mesh.agents.sysinfo:SysinfoAgent",
}
#: A worker line longer than this is the worker misbehaving.
MAX_LINE = 4 * 1024 * 1024
#: Cap on the concurrency a worker may claim in its hello.
MAX_CONCURRENCY = 256
_ISOLATIONS = frozenset({"inline", "thread", "process"})


class AgentError(KaiMeshError):
    """A call to an agent did not produce a result; `code` says why, for the reply on the bus."""

    code: ClassVar[str] = "agent_error"


class NoSuchAgent(AgentError):
    """No agent of that name runs on this node."""

    code = "no_such_agent"


class UnknownIntent(AgentError):
    """The agent does not serve that intent; the message lists the ones it does."""

    code = "unknown_intent"


class AgentRejectedError(AgentError):
    """The agent refused the request (it raised `AgentRejected`); the message is its reason."""

    code = "rejected"


class AgentCrashed(AgentError):
    """The agent raised while serving the request, or its worker died under it."""

    code = "agent_error"


class AgentTimeout(AgentError):
    """The request overran its time limit; the agent is being restarted."""

    code = "timeout"


class AgentUnavailable(AgentError):
    """The agent is starting, restarting or failed."""

    code = "unavailable"


@dataclass(frozen=True)
class AgentSpec:
    """How to run one agent.

    `source` is "entry:<entry point name>", "class:<module>:<Class>" or "command" (then `command`
    is the argv of an external JSON-lines program). `isolation` overrides the class's; `env` is
    added to the environment of process agents. `timeout` is the default per-request limit.
    """

    name: str
    source: str
    command: tuple[str, ...] = ()
    timeout: float = 10.0
    isolation: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)


class _StartFailed(Exception):
    """An incarnation could not be built; `permanent` means retrying cannot help."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent


class _Runner(Protocol):
    failed: trio.Event
    reason: str

    async def call(self, request: AgentRequest, limit: float) -> Any: ...

    def fail(self, reason: str, error: AgentError) -> None:
        """End this incarnation now (emergency shutdown): stop what can be stopped and fail
        the callers that can be failed with `error`."""
        ...


class _Slot:
    """One agent's identity, state and counters, shared by its supervisor and its callers."""

    def __init__(self, spec: AgentSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.cls: type[Agent] | None = None
        self.isolation = spec.isolation or ("process" if spec.source == "command" else "unknown")
        self.intents: frozenset[str] = frozenset()
        self.concurrency = 1
        self.state = "starting"
        self.reason = ""
        self.restarts = 0
        self.served = 0
        self.errors = 0
        self.timeouts = 0
        self.in_flight = 0
        self.pid: int | None = None
        self.runner: _Runner | None = None
        # Set for inline agents only, so `call` can serve them without a runner.
        self.inline: Agent | None = None


def _crashed(name: str, exc: Exception) -> AgentCrashed:
    return AgentCrashed(f"agent {name} raised {type(exc).__name__}: {exc}")


class _InlineRunner:
    def __init__(self, instance: Agent) -> None:
        self.instance = instance
        self.failed = trio.Event()
        self.reason = ""

    async def call(self, request: AgentRequest, limit: float) -> Any:  # pragma: no cover
        # Never reached: AgentHost.call serves inline agents itself, without awaiting.
        return self.instance.handle(request)

    def fail(self, reason: str, error: AgentError) -> None:
        """Nothing runs between calls: an inline call holds the trio thread while it lasts."""


class _ThreadRunner:
    def __init__(self, slot: _Slot, instance: Agent) -> None:
        self._slot = slot
        self._instance = instance
        self._limiter = trio.CapacityLimiter(slot.concurrency)
        self.failed = trio.Event()
        self.reason = ""

    def fail(self, reason: str, error: AgentError) -> None:
        """A thread cannot be killed: calls already in it run to their end (each has its
        timeout), and no new one reaches this runner, which the host drops."""

    async def call(self, request: AgentRequest, limit: float) -> Any:
        name = self._slot.name
        handle = self._instance.handle
        started = False

        def job() -> tuple[bool, Any]:
            nonlocal started
            # Tells the caller the limiter let us in, so a timeout means handle overran.
            started = True
            try:
                return True, handle(request)
            except BaseException as exc:  # an agent's sys.exit() must not end the node
                return False, exc

        with trio.move_on_after(limit):
            ok, value = await trio.to_thread.run_sync(
                job, abandon_on_cancel=True, limiter=self._limiter
            )
            if ok:
                return value
            if isinstance(value, AgentRejected):
                raise AgentRejectedError(str(value))
            raise AgentCrashed(f"agent {name} raised {type(value).__name__}: {value}")
        if started and not self.failed.is_set():
            self.reason = f"a request overran its {limit:g} s limit"
            self.failed.set()
        raise AgentTimeout(f"agent {name} did not answer within {limit:g} s")


class _Pending:
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: Any = None
        self.error: AgentError | None = None


class _LineReader:
    """Splits a byte stream into lines, refusing any longer than `limit`."""

    def __init__(self, stream: trio.abc.ReceiveStream, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self._buf = bytearray()
        self._scanned = 0

    async def next_line(self) -> bytes | None:
        """The next line without its newline, or None at end of stream. Raises `_Misbehaved`."""
        while True:
            end = self._buf.find(b"\n", self._scanned)
            if end >= 0:
                if end > self._limit:
                    raise _Misbehaved(f"sent a line longer than {self._limit} bytes")
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                self._scanned = 0
                return line
            if len(self._buf) > self._limit:
                raise _Misbehaved(f"sent a line longer than {self._limit} bytes")
            self._scanned = len(self._buf)
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                return None
            self._buf += chunk


class _Misbehaved(Exception):
    """The worker broke the protocol; the text says how."""


def _parse_line(line: bytes) -> dict[str, Any]:
    try:
        msg = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise _Misbehaved(f"sent a line that is not JSON: {line[:60]!r}") from None
    if not isinstance(msg, dict):
        raise _Misbehaved(f"sent JSON that is not an object: {line[:60]!r}")
    return msg


class _ProcessRunner:
    """Talks to one worker process: many callers write requests, one reader task routes replies."""

    def __init__(self, slot: _Slot, proc: trio.Process, reader: _LineReader) -> None:
        self._slot = slot
        self._proc = proc
        self._reader = reader
        self._pending: dict[int, _Pending] = {}
        self._next_id = 0
        self._send_lock = trio.Lock()
        self._sem = trio.Semaphore(slot.concurrency)
        self.failed = trio.Event()
        self.reason = ""

    def fail(self, reason: str, error: AgentError) -> None:
        """End this incarnation: kill the worker and fail every pending call with `error`."""
        if not self.failed.is_set():
            self.reason = reason
            self.failed.set()
        with contextlib.suppress(OSError):
            self._proc.kill()
        for pending in self._pending.values():
            if not pending.done.is_set():
                pending.error = error
                pending.done.set()
        self._pending.clear()

    def _restarted(self, reason: str) -> AgentUnavailable:
        return AgentUnavailable(f"agent {self._slot.name} is restarting: {reason}")

    async def read_loop(self) -> None:
        """Route replies to their callers until the worker exits or misbehaves."""
        name = self._slot.name
        try:
            while True:
                line = await self._reader.next_line()
                if line is None:
                    break
                msg = _parse_line(line)
                request_id = msg.get("id")
                pending = self._pending.pop(request_id, None) if type(request_id) is int else None
                if pending is None:
                    # A reply for a call its caller gave up on (cancelled from outside).
                    log.debug("agent %s: reply for unknown id %r", name, request_id)
                    continue
                if "result" in msg:
                    pending.result = msg["result"]
                elif msg.get("code") == "rejected":
                    pending.error = AgentRejectedError(str(msg.get("error", "rejected")))
                else:
                    pending.error = AgentCrashed(f"agent {name} raised {msg.get('error', '?')}")
                pending.done.set()
        except _Misbehaved as exc:
            reason = f"worker {exc}"
            self.fail(reason, AgentCrashed(f"agent {name}'s {reason}"))
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("agent %s: stdout closed: %s", name, exc)
        status = "unknown"
        with trio.move_on_after(5):
            status = str(await self._proc.wait())
        reason = f"worker exited with status {status}"
        if self.failed.is_set():  # we killed it
            self.fail(self.reason, self._restarted(self.reason))
        else:
            self.fail(reason, AgentCrashed(f"agent {name}'s {reason}"))

    async def call(self, request: AgentRequest, limit: float) -> Any:
        name = self._slot.name
        request_id = self._next_id
        self._next_id += 1
        try:
            line = _encode_request(request_id, request)
        except (TypeError, ValueError) as exc:
            raise AgentRejectedError(_json_refusal(exc)) from None
        sent = False
        with trio.move_on_after(limit):
            async with self._sem:
                if self.failed.is_set():
                    raise self._restarted(self.reason)
                pending = _Pending()
                self._pending[request_id] = pending
                try:
                    async with self._send_lock:
                        sent = True
                        try:
                            await self._proc.stdin.send_all(line)  # type: ignore[union-attr]
                        except trio.Cancelled:
                            # Half a line may be in the pipe, so the stream is unusable now.
                            reason = "a request was interrupted mid-write"
                            self.fail(reason, self._restarted(reason))
                            raise
                    await pending.done.wait()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    raise self._restarted("its stdin is closed") from None
                finally:
                    self._pending.pop(request_id, None)
            if pending.error is not None:
                raise pending.error
            return pending.result
        if sent:
            reason = f"a request overran its {limit:g} s limit"
            self.fail(reason, self._restarted(reason))
        raise AgentTimeout(f"agent {name} did not answer within {limit:g} s")


def _encode_request(request_id: int, request: AgentRequest) -> bytes:
    msg = {
        "id": request_id,
        "intent": request.intent,
        "payload": request.payload,
        "context": dict(request.context),
        "from": request.sender,
        "message_id": request.message_id,
    }
    return json.dumps(msg, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def _json_refusal(exc: Exception) -> str:
    if "bytes" in str(exc):
        return "payload holds bytes; process agents take JSON values"
    return f"payload is not a JSON value ({exc}); process agents take JSON values"


@dataclass
class _Backoff:
    initial: float
    maximum: float
    healthy_after: float
    current: float = 0.0

    def next(self, healthy_for: float) -> float:
        if healthy_for >= self.healthy_after or self.current == 0.0:
            self.current = self.initial
        else:
            self.current = min(self.current * 2, self.maximum)
        return self.current


def _kill(proc: trio.Process) -> None:
    with contextlib.suppress(OSError):
        proc.kill()


async def _reap_on_exit(proc: trio.Process) -> None:
    """Kill the worker when its incarnation ends (cancellation), and wait so it leaves no zombie."""
    try:
        await trio.sleep(math.inf)
    finally:
        _kill(proc)
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await proc.wait()


async def _pump_stderr(name: str, stream: trio.abc.ReceiveStream) -> None:
    """Log what the worker writes on stderr, so it neither fills the pipe nor vanishes."""
    reader = _LineReader(stream, 64 * 1024)
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while True:
            try:
                line = await reader.next_line()
            except _Misbehaved:
                log.warning("agent %s: stderr line too long, no longer logged", name)
                await _drain(stream)
                return
            if line is None:
                return
            log.info("agent %s: %s", name, line.decode(errors="replace")[:1000])


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    while await stream.receive_some(65536):
        pass
