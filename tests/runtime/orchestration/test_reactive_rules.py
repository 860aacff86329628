"""Reactive rules from manifests, fired by mesh events on a memory-transport mesh (issue 12):
a condition over the event's fields, `scale` with a cooldown, and `create` for a task whose
capability only a sleeping service offers."""

from __future__ import annotations

import trio

from kai_mesh.core.events.wire import Event
from kai_mesh.core.orchestration.manifest import parse_manifest
from tests.runtime.scale_mesh import build, placed, ready

BURST = """
name = "burst"
version = "1"
agent = "echo"
replicas = { min = 1, max = 6 }

[[rules]]
name = "motion"
on = "camera.motion"
when = "count > 3 and zone == 'gate'"
do = "scale burst +2"
cooldown = 60
"""

OCR = """
name = "ocr"
version = "1"
agent = "echo"
capabilities = []
intents = ["ocr"]
replicas = { min = 0, max = 2 }

[autoscaling]
idle = "10m"

[[rules]]
name = "needed"
on = "task.created"
when = "capability == 'ocr'"
do = "create ocr"
cooldown = 30
"""


async def test_rule_scales_with_its_condition_and_cooldown(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        mesh = await build(nursery, 5, seed=41)
        admin, watcher, sender = mesh.nodes[0], mesh.nodes[2], mesh.nodes[4]
        scaled: list[Event] = []
        watcher.events.listen("service.scaled", scaled.append)
        await admin.orch.deploy(parse_manifest(BURST, "burst.toml"))
        with trio.fail_after(60):
            while ready(watcher, "burst") != 1:  # noqa: ASYNC110
                await trio.sleep(0.5)
        await trio.sleep(5)  # the owner has told its peers it follows camera.motion

        sender.events.publish("camera.motion", {"count": 2, "zone": "gate"})  # condition false
        sender.events.publish("camera.motion", {"count": 9, "zone": "yard"})  # condition false
        await trio.sleep(10)
        assert placed(watcher, "burst") == 1

        sender.events.publish("camera.motion", {"count": 5, "zone": "gate"})
        with trio.fail_after(30):
            while placed(watcher, "burst") != 3:  # noqa: ASYNC110
                await trio.sleep(0.5)
        fired_at = trio.current_time()
        sender.events.publish("camera.motion", {"count": 7, "zone": "gate"})  # in the cooldown
        await trio.sleep(20)
        assert placed(watcher, "burst") == 3
        await trio.sleep(max(0.0, fired_at + 61 - trio.current_time()))
        sender.events.publish("camera.motion", {"count": 7, "zone": "gate"})
        with trio.fail_after(30):
            while placed(watcher, "burst") != 5:  # noqa: ASYNC110
                await trio.sleep(0.5)
        assert [(e.fields["from"], e.fields["to"]) for e in scaled] == [(1, 3), (3, 5)]
        assert all("rule motion" in str(e.fields["reason"]) for e in scaled)
        nursery.cancel_scope.cancel()


async def test_a_task_nobody_can_run_wakes_the_service_that_can(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        mesh = await build(nursery, 5, seed=43)
        await mesh.nodes[0].orch.deploy(parse_manifest(OCR, "ocr.toml"))
        await trio.sleep(20)
        assert placed(mesh.nodes[1], "ocr") == 0  # asleep: min 0
        mesh.nodes[3].events.publish("task.created", {"capability": "translate"})
        await trio.sleep(10)
        assert placed(mesh.nodes[1], "ocr") == 0  # not a task for it
        mesh.nodes[3].events.publish("task.created", {"capability": "ocr", "task": "t1"})
        with trio.fail_after(30):
            while ready(mesh.nodes[1], "ocr") != 1:  # noqa: ASYNC110
                await trio.sleep(0.5)
        await trio.sleep(60)  # the rule's scale counts as activity: no idle drop meanwhile
        assert placed(mesh.nodes[1], "ocr") == 1
        nursery.cancel_scope.cancel()
