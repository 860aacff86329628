"""The agent host: runs the node's agents, isolates them, times them out and restarts them.

Every agent gets a supervisor task that loops through incarnations: build a runner (starting),
serve until the runner reports itself broken (ready), tear it down, wait an exponential backoff
(restarting) and go again; the backoff doubles from `backoff_initial` to `backoff_max` and is reset
once an incarnation has stayed healthy for `healthy_after` seconds. An agent whose class or command
cannot be found is "failed" and left alone; the other agents run regardless, and nothing an agent
does propagates out of `AgentHost.run`.

Where `handle` runs — inline, in a thread or in a worker process, by the class's `isolation` or
the spec's override — is the business of the runners in `kai_mesh.runtime.agents.runners`.

A request raising in `handle` is the request's failure, not the agent's: the caller gets
`AgentCrashed` and the same instance serves the next request.

A certified emergency shutdown suspends the host (`suspend(reason)`, called from the governance
watch in runtime/governance/policy.py): every incarnation is torn down (worker processes killed,
their
pending callers answered), every agent shows `stopped` with the shutdown as its reason, and
calls raise `AgentsSuspended` (code `shutdown`) until `resume()` starts them all again. A host
suspended before `run` starts no agent at all, which is how a shutdown holds across restarts.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

import trio

from kai_mesh.agents.base import AgentRejected, AgentRequest
from kai_mesh.core.errors import UsageError
from kai_mesh.runtime.agents.runners import (
    _ISOLATIONS,
    BUILTIN_AGENTS,
    ENTRY_POINT_GROUP,
    MAX_CONCURRENCY,
    MAX_LINE,
    AgentCrashed,
    AgentError,
    AgentRejectedError,
    AgentSpec,
    AgentTimeout,
    AgentUnavailable,
    NoSuchAgent,
    UnknownIntent,
    _Backoff,
    _crashed,
    _InlineRunner,
    _kill,
    _LineReader,
    _Misbehaved,
    _parse_line,
    _ProcessRunner,
    _pump_stderr,
    _reap_on_exit,
    _Runner,
    _Slot,
    _StartFailed,
    _ThreadRunner,
)
from kai_mesh.runtime.agents.worker import load_class

__all__ = [
    "AgentCrashed",
    "AgentError",
    "AgentHost",
    "AgentRejectedError",
    "AgentSpec",
    "AgentTimeout",
    "AgentUnavailable",
    "AgentsSuspended",
    "NoSuchAgent",
    "UnknownIntent",
]

log = logging.getLogger(__name__)


class AgentsSuspended(AgentError):
    """Every agent is stopped by a certified emergency shutdown (until a certified lift)."""

    code = "shutdown"


class AgentHost:
    """Owns the node's agents (see the module docstring). Use from the trio thread only."""

    def __init__(
        self,
        specs: Sequence[AgentSpec],
        *,
        on_event: Callable[[str, dict[str, Any]], None],
        backoff_initial: float = 0.2,
        backoff_max: float = 30.0,
        healthy_after: float = 60.0,
        start_timeout: float = 15.0,
    ) -> None:
        """Raises `UsageError` if two specs share a name."""
        self._slots: dict[str, _Slot] = {}
        for spec in specs:
            if spec.name in self._slots:
                raise UsageError(f"two agents are named {spec.name!r}")
            self._slots[spec.name] = _Slot(spec)
        self._on_event = on_event
        self._backoff = (backoff_initial, backoff_max, healthy_after)
        self._start_timeout = start_timeout
        self._suspended: str | None = None  # the shutdown's reason while suspended
        self._resumed = trio.Event()
        self._generation: trio.CancelScope | None = None  # the running supervisors' scope
        self._nursery: trio.Nursery | None = None  # the running generation's nursery
        self._scopes: dict[str, trio.CancelScope] = {}  # each supervisor's own scope

    # -- queries ------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """The configured agent names, in configuration order."""
        return list(self._slots)

    def info(self) -> list[dict[str, Any]]:
        """One dict per agent: name, intents, isolation, state, reason, restarts, served, errors,
        timeouts, in_flight, concurrency, pid (process agents, else None)."""
        return [
            {
                "name": s.name,
                "intents": sorted(s.intents),
                "isolation": s.isolation,
                "state": s.state,
                "reason": s.reason,
                "restarts": s.restarts,
                "served": s.served,
                "errors": s.errors,
                "timeouts": s.timeouts,
                "in_flight": s.in_flight,
                "concurrency": s.concurrency,
                "pid": s.pid,
            }
            for s in self._slots.values()
        ]

    def intents_of(self, name: str) -> frozenset[str] | None:
        """The agent's intents (empty until an external program has said hello); None if no such
        agent."""
        slot = self._slots.get(name)
        return None if slot is None else slot.intents

    @property
    def suspended(self) -> str | None:
        """The shutdown reason while the host is suspended, else None."""
        return self._suspended

    def concurrency_of(self, name: str) -> int:
        """Requests the agent serves at once. Raises `NoSuchAgent`."""
        slot = self._slots.get(name)
        if slot is None:
            raise NoSuchAgent(f"no agent named {name!r}")
        return slot.concurrency

    # -- calls --------------------------------------------------------------------------------

    # The timeout is not the caller's cancellation: overrunning it gets the agent restarted, so
    # it cannot be left to an enclosing fail_after.
    async def call(
        self,
        name: str,
        request: AgentRequest,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Any:
        """Serve `request` with agent `name` and return the reply payload.

        `timeout` defaults to the spec's (inline agents cannot be timed out). Raises
        `NoSuchAgent`, `AgentsSuspended`, `UnknownIntent`, `AgentRejectedError`,
        `AgentCrashed`, `AgentTimeout` or `AgentUnavailable`; never anything the agent raised.
        """
        slot = self._slots.get(name)
        if slot is None:
            raise NoSuchAgent(f"no agent named {name!r}")
        if self._suspended is not None:
            raise self._refusal(name)
        if request.intent not in slot.intents and (slot.intents or slot.state == "ready"):
            served = ", ".join(sorted(slot.intents)) or "none"
            raise UnknownIntent(
                f"agent {name} does not serve intent {request.intent!r} (it serves: {served})"
            )
        inline = slot.inline
        if inline is not None:
            # The hot path: no thread, no allocation beyond the agent's own. The one checkpoint
            # (a few µs) keeps a caller looping on echo from starving the node, and lets a
            # cancelled caller skip the work.
            await trio.lowlevel.checkpoint()
            try:
                result = inline.handle(request)
            except AgentRejected as exc:
                slot.errors += 1
                raise AgentRejectedError(str(exc)) from None
            except Exception as exc:
                slot.errors += 1
                raise _crashed(name, exc) from None
            slot.served += 1
            return result
        runner = slot.runner
        if runner is None or runner.failed.is_set():
            why = f": {slot.reason}" if slot.reason else ""
            raise AgentUnavailable(f"agent {name} is {slot.state}{why}")
        slot.in_flight += 1
        try:
            result = await runner.call(request, slot.spec.timeout if timeout is None else timeout)
        except AgentTimeout:
            slot.timeouts += 1
            raise
        except AgentError:
            if self._suspended is not None:  # the incarnation was torn down under the call
                raise self._refusal(name) from None
            slot.errors += 1
            raise
        except AgentRejected as exc:
            slot.errors += 1
            raise AgentRejectedError(str(exc)) from None
        except Exception as exc:
            slot.errors += 1
            raise _crashed(name, exc) from None
        finally:
            slot.in_flight -= 1
        slot.served += 1
        return result

    def _refusal(self, name: str) -> AgentsSuspended:
        why = f"the mesh is shut down by governance: {self._suspended}"
        return AgentsSuspended(f"agent {name} is stopped: {why}")

    # -- supervision --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every agent and supervise them until cancelled; worker processes are killed on
        the way out. `task_status.started()` is called once every agent has finished its first
        start (ready, failed or waiting to restart), or at once while suspended. Never raises
        because of an agent."""
        started = False
        while True:
            if self._suspended is not None:
                if not started:
                    started = True
                    task_status.started()
                await self._resumed.wait()
                continue
            first_starts = [trio.Event() for _ in self._slots]
            with trio.CancelScope() as self._generation:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    for slot, first in zip(self._slots.values(), first_starts, strict=True):
                        nursery.start_soon(self._own, slot, first, name=f"agent:{slot.name}")
                    for first in first_starts:
                        await first.wait()
                    if not started:
                        started = True
                        task_status.started()
                    await trio.sleep_forever()  # until suspend() cancels this generation
            self._generation = None
            self._nursery = None

    # -- agents added and removed at run time (services placed on this node) --------------------

    def add(self, spec: AgentSpec) -> None:
        """Run one more agent (a service replica placed here); it starts at once if the host is
        running, else with the others. Raises `UsageError` if the name is taken."""
        if spec.name in self._slots:
            raise UsageError(f"an agent named {spec.name!r} already runs here")
        slot = self._slots[spec.name] = _Slot(spec)
        if self._nursery is not None and self._suspended is None:
            self._nursery.start_soon(self._own, slot, trio.Event(), name=f"agent:{slot.name}")

    def remove(self, name: str) -> bool:
        """Stop agent `name` and forget it (its worker process is killed with its incarnation;
        callers in flight get `AgentUnavailable`). False if there is no such agent."""
        slot = self._slots.pop(name, None)
        if slot is None:
            return False
        scope = self._scopes.pop(name, None)
        if scope is not None:
            scope.cancel()
        if slot.runner is not None:
            slot.runner.fail("removed", AgentUnavailable(f"agent {name} was removed"))
        slot.state, slot.reason = "stopped", "removed"
        try:
            self._on_event("agents", {"event": "removed", "agent": name})
        except Exception:
            log.exception("on_event callback failed for agent event removed")
        return True

    async def _own(self, slot: _Slot, first_start: trio.Event) -> None:
        """`_supervise` in a scope of its own, so that `remove` can end just this agent."""
        with trio.CancelScope() as scope:
            self._scopes[slot.name] = scope
            try:
                await self._supervise(slot, first_start)
            finally:
                first_start.set()
                if self._scopes.get(slot.name) is scope:
                    del self._scopes[slot.name]

    # -- operator restart ---------------------------------------------------------------------

    def restart(self, name: str) -> dict[str, Any]:
        """End agent `name`'s running incarnation so its supervisor starts a new one (the
        operator's `agent_restart`): a worker process is killed and its pending callers get
        `AgentUnavailable`; an inline or thread agent is dropped after its calls in progress.
        It goes through `restarting` (counted, with the usual backoff) to `ready`.

        Raises:
            NoSuchAgent: no agent of that name.
            AgentsSuspended: a certified emergency shutdown holds.
            AgentUnavailable: the agent is not running now (starting, restarting or failed).
        """
        slot = self._slots.get(name)
        if slot is None:
            raise NoSuchAgent(f"no agent named {name!r} on this node")
        if self._suspended is not None:
            raise self._refusal(name)
        runner = slot.runner
        if runner is None or runner.failed.is_set():
            raise AgentUnavailable(f"agent {name} is {slot.state}: nothing to restart now")
        reason = "restarted by the operator"
        log.info("agent %s: %s", name, reason)
        runner.fail(reason, AgentUnavailable(f"agent {name} is restarting: {reason}"))
        if not runner.failed.is_set():  # inline and thread runners only note it
            runner.reason = reason
            runner.failed.set()
        return {"agent": name, "restarting": True, "restarts": slot.restarts + 1}

    # -- emergency shutdown -------------------------------------------------------------------

    def suspend(self, reason: str) -> None:
        """Stop every agent because of a certified emergency shutdown: tear down each
        incarnation, answer pending calls with `AgentsSuspended`, show each agent `stopped` and
        say so on the `agents` topic. Calling it again only updates the reason."""
        reason = reason or "emergency shutdown"
        if self._suspended is None:
            self._resumed = trio.Event()
        self._suspended = reason
        if self._generation is not None:
            # Cancel first: the supervisors then wake cancelled, not to restart a failed runner.
            self._generation.cancel()
        for slot in self._slots.values():
            if slot.runner is not None:  # a process runner kills its worker, answers callers
                slot.runner.fail(f"emergency shutdown: {reason}", self._refusal(slot.name))
            slot.runner = None
            slot.inline = None
            slot.pid = None
            slot.reason = f"emergency shutdown: {reason}"
            log.warning("agent %s stopped: emergency shutdown: %s", slot.name, reason)
            self._emit(slot, "stopped", reason=slot.reason, shutdown=True)

    def resume(self) -> None:
        """Start every agent again after a certified `shutdown_lift` (no-op if not suspended)."""
        if self._suspended is None:
            return
        self._suspended = None
        for slot in self._slots.values():
            slot.reason = ""
            log.info("agent %s resuming: the emergency shutdown is lifted", slot.name)
            self._emit(slot, "resumed")
        self._resumed.set()

    def _emit(self, slot: _Slot, event: str, **data: Any) -> None:
        if self._suspended is not None and event != "stopped":
            return  # a supervisor between its cancellation and its next checkpoint
        slot.state = {"started": "starting", "resumed": "starting"}.get(event, event)
        try:
            self._on_event("agents", {"event": event, "agent": slot.name, **data})
        except Exception:
            log.exception("on_event callback failed for agent event %s", event)

    async def _supervise(self, slot: _Slot, first_start: trio.Event) -> None:
        backoff = _Backoff(*self._backoff)
        try:
            self._resolve(slot)
        except _StartFailed as exc:
            slot.reason = str(exc)
            log.error("agent %s failed: %s", slot.name, exc)
            self._emit(slot, "failed", reason=slot.reason)
            first_start.set()
            return
        while True:
            self._emit(slot, "started")
            failure: _StartFailed | None = None
            reason, healthy_for = "", 0.0
            try:
                # _StartFailed is caught inside the nursery, which would wrap it in a group.
                async with trio.open_nursery() as nursery:
                    try:
                        runner = await self._start(slot, nursery)
                    except _StartFailed as exc:
                        failure = exc
                        nursery.cancel_scope.cancel()
                    else:
                        slot.runner = runner
                        slot.reason = ""
                        ready_at = trio.current_time()
                        self._emit(slot, "ready", intents=sorted(slot.intents), pid=slot.pid)
                        first_start.set()
                        await runner.failed.wait()
                        reason = runner.reason
                        healthy_for = trio.current_time() - ready_at
                        nursery.cancel_scope.cancel()
            except Exception as exc:  # a bug here must not take the node down
                log.exception("agent %s: supervisor error", slot.name)
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                slot.runner = None
                slot.inline = None
                slot.pid = None
            if failure is not None:
                reason = str(failure)
                if failure.permanent:
                    slot.reason = reason
                    log.error("agent %s failed: %s", slot.name, reason)
                    self._emit(slot, "failed", reason=reason)
                    first_start.set()
                    return
            delay = backoff.next(healthy_for)
            slot.restarts += 1
            slot.reason = reason
            log.warning("agent %s restarting in %.1f s: %s", slot.name, delay, reason)
            self._emit(slot, "restarting", reason=reason, backoff=delay, restarts=slot.restarts)
            first_start.set()
            await trio.sleep(delay)

    def _resolve(self, slot: _Slot) -> None:
        """Find the agent's class (or check its command) and settle its isolation."""
        spec = slot.spec
        kind, _, rest = spec.source.partition(":")
        if spec.isolation is not None and spec.isolation not in _ISOLATIONS:
            raise _StartFailed(f"unknown isolation {spec.isolation!r}", permanent=True)
        if kind == "command":
            if not spec.command:
                raise _StartFailed("source is 'command' but no command is given", permanent=True)
            slot.isolation = "process"
            return
        try:
            if kind == "entry" and rest in BUILTIN_AGENTS:
                cls = load_class(BUILTIN_AGENTS[rest])
            elif kind == "entry":
                # Only for agents of other packages: importing importlib.metadata and reading
                # every installed distribution's entry points costs 50-250 ms of start-up here.
                import importlib.metadata

                found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=rest)
                if not found:
                    raise _StartFailed(f"no entry point {rest!r} in group {ENTRY_POINT_GROUP}")
                ep = next(iter(found))
                cls = load_class(ep.value)
            elif kind == "class":
                cls = load_class(rest)
            else:
                raise _StartFailed(f"unknown agent source {spec.source!r}")
        except _StartFailed as exc:
            raise _StartFailed(str(exc), permanent=True) from None
        except Exception as exc:
            raise _StartFailed(
                f"cannot load {spec.source}: {type(exc).__name__}: {exc}", permanent=True
            ) from None
        slot.cls = cls
        slot.isolation = spec.isolation or cls.isolation
        slot.intents = frozenset(cls.intents)
        slot.concurrency = max(1, min(int(cls.concurrency), MAX_CONCURRENCY))

    async def _start(self, slot: _Slot, nursery: trio.Nursery) -> _Runner:
        """Build one incarnation's runner; raises `_StartFailed`."""
        cls = slot.cls
        if slot.isolation == "process":
            return await self._start_process(slot, nursery)
        assert cls is not None
        try:
            if slot.isolation == "inline":
                instance = cls()
            else:
                with trio.fail_after(self._start_timeout):
                    instance = await trio.to_thread.run_sync(cls, abandon_on_cancel=True)
        except trio.TooSlowError:
            raise _StartFailed(f"constructor took longer than {self._start_timeout:g} s") from None
        except Exception as exc:
            raise _StartFailed(f"constructor raised {type(exc).__name__}: {exc}") from None
        if slot.isolation == "inline":
            slot.inline = instance
            return _InlineRunner(instance)
        return _ThreadRunner(slot, instance)

    async def _start_process(self, slot: _Slot, nursery: trio.Nursery) -> _ProcessRunner:
        spec = slot.spec
        env = dict(os.environ)
        if slot.cls is not None:
            target = f"{slot.cls.__module__}:{slot.cls.__qualname__}"
            argv: list[str] = [sys.executable, "-m", "kai_mesh.runtime.agents.worker", target]
            # The worker must import what we imported, test modules included.
            env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
        else:
            argv = list(spec.command)
        env.update(spec.env)
        try:
            proc = await trio.lowlevel.open_process(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            raise _StartFailed(f"cannot start {argv[0]}: {exc}", permanent=True) from None
        # From here on the process is ours: the reaper kills it when the incarnation ends.
        nursery.start_soon(_reap_on_exit, proc, name=f"agent:{slot.name}:reaper")
        slot.pid = proc.pid
        assert proc.stdout is not None and proc.stderr is not None
        nursery.start_soon(_pump_stderr, slot.name, proc.stderr, name=f"agent:{slot.name}:stderr")
        reader = _LineReader(proc.stdout, MAX_LINE)
        try:
            intents, concurrency = await self._read_hello(reader)
        except _StartFailed:
            _kill(proc)
            raise
        if slot.cls is None:
            slot.intents = intents
        slot.concurrency = concurrency
        runner = _ProcessRunner(slot, proc, reader)
        nursery.start_soon(runner.read_loop, name=f"agent:{slot.name}:reader")
        return runner

    async def _read_hello(self, reader: _LineReader) -> tuple[frozenset[str], int]:
        try:
            with trio.fail_after(self._start_timeout):
                line = await reader.next_line()
            if line is None:
                raise _Misbehaved("exited before saying hello")
            hello = _parse_line(line)
        except trio.TooSlowError:
            raise _StartFailed(f"no hello within {self._start_timeout:g} s") from None
        except _Misbehaved as exc:
            raise _StartFailed(f"worker {exc}") from None
        intents = hello.get("intents")
        concurrency = hello.get("concurrency", 1)
        if (
            hello.get("ready") is not True
            or not isinstance(intents, list)
            or not intents
            or not all(isinstance(i, str) for i in intents)
            or type(concurrency) is not int
            or concurrency < 1
        ):
            raise _StartFailed(f"worker sent a bad hello: {line[:200]!r}")
        return frozenset(intents), min(concurrency, MAX_CONCURRENCY)
