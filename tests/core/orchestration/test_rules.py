"""Reactive rules: the condition parser (never code execution), the TOML checks, cooldowns."""

from __future__ import annotations

import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kai_mesh.core.orchestration.rules import (
    Action,
    RuleEngine,
    RuleError,
    evaluate,
    parse_condition,
    rules_from_table,
)

RULES = """
[[rules]]
name = "more-echo"
on = "agent.overloaded"
when = "load.in_flight > 8 and not (service == 'batch')"
do = "scale echo +1"
cooldown = 30
trailing = true

[[rules]]
name = "make-ocr"
on = "task.created"
when = "capability == 'ocr' and live == 0"
do = "create ocr,gpu"
"""


@pytest.mark.parametrize(
    ("cond", "fields", "expected"),
    [
        ("a > 1", {"a": 2}, True),
        ("a > 1", {"a": "2"}, False),  # number vs string: false, not an error
        ("a > 1", {}, False),  # missing: false
        ("x.y == 'z' or b", {"x": {"y": "z"}}, True),
        ("not b", {"b": False}, True),
        ("b == true", {"b": True}, True),
        ("(a >= 1 and a <= 3) and a != 2", {"a": 2}, False),
        ("a < -1.5", {"a": -2}, True),
    ],
)
def test_conditions(cond: str, fields: dict[str, object], expected: bool) -> None:
    assert evaluate(parse_condition(cond), fields) is expected


@pytest.mark.parametrize(
    "bad", ["", "a >", "(a > 1", "a > 1 )", "__import__('os')", "a ; b", "(a > 1) > 2", "and"]
)
def test_bad_conditions_are_one_line_errors(bad: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_condition(bad)
    assert "\n" not in str(exc.value)


@settings(max_examples=500)
@given(st.text(max_size=80) | st.from_regex(r"[a-z .()'<>=!0-9]{0,40}", fullmatch=True))
def test_any_string_parses_or_is_a_clear_error(text: str) -> None:
    try:
        expr = parse_condition(text)
    except ValueError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert evaluate(expr, {"a": 1, "b": "x"}) in (True, False)


def test_rules_from_toml_and_cooldown_with_trailing_edge() -> None:
    rules = rules_from_table(tomllib.loads(RULES)["rules"], "svc.toml")
    assert rules[0].action == Action("scale", target="echo", mode="+", amount=1)
    assert rules[1].action == Action("create", capabilities=("ocr", "gpu"))
    engine = RuleEngine(rules)
    hot = {"load": {"in_flight": 9}, "service": "web"}
    assert [f.rule for f in engine.handle_event("agent.overloaded", hot, 0.0)] == ["more-echo"]
    assert engine.handle_event("agent.overloaded", hot, 10.0) == []  # cooling down
    assert engine.get_timer() == 30.0
    assert engine.handle_timer(29.0) == []
    assert [f.rule for f in engine.handle_timer(30.0)] == ["more-echo"]
    assert engine.get_timer() is None
    assert engine.handle_event("agent.overloaded", {"load": {"in_flight": 2}}, 99.0) == []
    fired = engine.handle_event("task.created", {"capability": "ocr", "live": 0}, 1.0)
    assert [f.rule for f in fired] == ["make-ocr"]


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ([{"name": "a", "on": "t", "do": "scale x +1", "bogus": 1}], "rules[0].bogus"),
        ([{"name": "a", "on": "t"}], "rules[0].do"),
        ([{"name": "a", "on": "t", "do": "scale x 1"}], "rules[0].do"),
        ([{"name": "a", "on": "t", "do": "rm -rf /"}], "rules[0].do"),
        ([{"name": "a", "on": "t", "do": "publish y", "when": "a >"}], "rules[0].when"),
        ([{"name": "a", "on": "t", "do": "publish y", "cooldown": -1}], "rules[0].cooldown"),
        ([{"name": "a", "on": "t", "do": "publish y"}] * 2, "rules[1].name"),
        ([{"name": "A", "on": "t", "do": "publish y"}], "rules[0].name"),
    ],
)
def test_rule_errors_name_the_key(table: list[dict[str, object]], key: str) -> None:
    with pytest.raises(RuleError) as exc:
        rules_from_table(table, "svc.toml")
    assert exc.value.key == key and str(exc.value).startswith(f"svc.toml: {key}: ")
