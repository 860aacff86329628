"""Hostile command-line input is one line on stderr and exit 2, before any daemon is asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from kai_mesh.cli.main import ExitCode, main

DEEP_LIST = "[" * 5000 + "]" * 5000
DEEP_MAP = '{"a":' * 2000 + "1" + "}" * 2000


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e300", "0", "-1", "soon"])
def test_a_timeout_that_is_not_a_sane_number_of_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--home", str(tmp_path), "send", f"--timeout={value}", "kai://x/echo", "echo"])
    assert exited.value.code == ExitCode.USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert "argument --timeout" in err[-1] and "seconds" in err[-1]


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["send", "kai://x/echo", "echo", DEEP_LIST], "payload"),
        (["send", "kai://x/echo", "echo", "[" * 65 + "]" * 65], "payload"),
        (["state", "set", "shared/x", DEEP_LIST], "value"),
        (["propose", "policy_update", DEEP_MAP], "body"),
    ],
)
def test_json_nested_too_deep_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], what: str
) -> None:
    assert main(["--home", str(tmp_path), *args]) == ExitCode.USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"kai-mesh: {what}: JSON nested more than 64 deep"]
