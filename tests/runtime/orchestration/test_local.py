"""This node's facts from the machine and the config."""

from __future__ import annotations

from pathlib import Path

from kai_mesh.config.settings import load_config
from kai_mesh.runtime.agents.host import AgentHost
from kai_mesh.runtime.orchestration.local import Sampler, detect_facts


def test_detected_facts_with_and_without_a_gpu(tmp_path: Path) -> None:
    plain = detect_facts(["camera"], root=tmp_path)
    assert plain.capabilities == {"camera"} and plain.cpus >= 1 and plain.memory_mb > 1
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "nvidia0").touch()
    assert detect_facts([], root=tmp_path).capabilities == {"gpu"}


def test_config_capabilities(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[node]\ncapabilities = ["camera", "lora"]\n')
    assert load_config(path).capabilities == ("camera", "lora")
    path.write_text('[node]\ncapabilities = ["no spaces"]\n')
    try:
        load_config(path)
    except Exception as exc:  # ConfigError: one line naming the key
        assert "capabilities" in str(exc) and "\n" not in str(exc)
    else:
        raise AssertionError("a bad capability was accepted")


async def test_the_sample_carries_the_tasks_run_here() -> None:
    host = AgentHost([], on_event=lambda topic, data: None)
    runs = [0]
    sample = Sampler(host, list, tasks_done=lambda: runs[0])
    assert sample().tasks_done == 0
    runs[0] = 7
    assert sample().tasks_done == 7
