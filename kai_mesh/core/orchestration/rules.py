"""Reactive rules: mesh events in, actions out, with a safe condition and a cooldown per rule.

A rule (TOML, `[[rules]]`) is `on` (a topic: `task.created`, `agent.overloaded`, `queue.backlog`,
`node.failed`, `service.scaled` or a user topic), `when` (a condition over the event's fields),
`do` (`scale NAME +N|-N|=N`, `create CAP[,CAP...]`, `publish TOPIC`) and `cooldown` (seconds).

The condition language is parsed by hand, never `eval`: `and`, `or`, `not`, parentheses,
comparisons `== != < <= > >=` between dotted field names (`load.cpu`), numbers, 'strings',
`true`/`false`. A missing field, or a comparison of a number with a string, is false, never an
error at run time. Any input string either parses or raises `RuleError` (Hypothesis holds us to
it); text is bounded (512 characters, depth 16).

`RuleEngine` is sans-IO: `handle_event(topic, fields, now)` returns the actions that fire; a rule
in its cooldown does not fire (with `trailing = true` it fires once when the cooldown ends, on the
newest matching event: `get_timer()` / `handle_timer(now)`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kai_mesh.core.errors import ConfigError

MAX_CONDITION = 512
MAX_DEPTH = 16
MAX_RULES = 256
_TOPIC_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}")
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_TOKEN_RE = re.compile(
    r"\s*(?:(?P<num>-?[0-9]+(?:\.[0-9]+)?)|(?P<str>'[^'\\]{0,128}')|"
    r"(?P<op>==|!=|<=|>=|<|>|\(|\))|(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*))"
)
_OPS = ("==", "!=", "<", "<=", ">", ">=")
_KEYS = frozenset({"name", "on", "when", "do", "cooldown", "trailing"})


class RuleError(ConfigError):
    """A rule is refused; one line naming the source, the key and the problem."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")
        self.key = key
        self.problem = problem


# --- the condition ------------------------------------------------------------------------------

Value = float | str | bool


@dataclass(frozen=True, slots=True)
class Field:
    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Compare:
    op: str
    left: Field | Value
    right: Field | Value


@dataclass(frozen=True, slots=True)
class Not:
    inner: Expr


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: Literal["and", "or"]
    items: tuple[Expr, ...]


Expr = Compare | Not | BoolOp | Field | float | str | bool


def parse_condition(text: str) -> Expr:
    """Parse a condition.

    Raises:
        ValueError: one line saying what is wrong and where (never anything else).
    """
    if not isinstance(text, str):
        raise ValueError("must be a string")
    if len(text) > MAX_CONDITION:
        raise ValueError(f"longer than {MAX_CONDITION} characters")
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN_RE.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(
                f"unexpected character at {pos + len(text[pos:]) - len(text[pos:].lstrip())}"
            )
        kind = m.lastgroup or ""
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    if not tokens:
        raise ValueError("is empty")
    parser = _Parser(tokens)
    expr = parser.or_(0)
    if parser.i != len(tokens):
        raise ValueError(f"unexpected {tokens[parser.i][1]!r}")
    return expr


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.t = tokens
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def word(self, w: str) -> bool:
        tok = self.peek()
        if tok == ("name", w):
            self.i += 1
            return True
        return False

    def or_(self, depth: int) -> Expr:
        if depth > MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH}")
        items = [self.and_(depth)]
        while self.word("or"):
            items.append(self.and_(depth))
        return items[0] if len(items) == 1 else BoolOp("or", tuple(items))

    def and_(self, depth: int) -> Expr:
        items = [self.not_(depth)]
        while self.word("and"):
            items.append(self.not_(depth))
        return items[0] if len(items) == 1 else BoolOp("and", tuple(items))

    def not_(self, depth: int) -> Expr:
        if self.word("not"):
            if depth > MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH}")
            return Not(self.not_(depth + 1))
        left = self.atom(depth)
        tok = self.peek()
        if tok is not None and tok[0] == "op" and tok[1] in _OPS:
            self.i += 1
            right = self.atom(depth)
            if isinstance(left, Compare | Not | BoolOp) or isinstance(
                right, Compare | Not | BoolOp
            ):
                raise ValueError(f"{tok[1]} compares values, not conditions")
            return Compare(tok[1], left, right)
        return left

    def atom(self, depth: int) -> Expr:
        tok = self.peek()
        if tok is None:
            raise ValueError("ends too early")
        self.i += 1
        kind, text = tok
        if kind == "num":
            return float(text)
        if kind == "str":
            return text[1:-1]
        if kind == "op" and text == "(":
            inner = self.or_(depth + 1)
            if self.peek() != ("op", ")"):
                raise ValueError("a ( is not closed")
            self.i += 1
            return inner
        if kind == "name":
            if text in ("true", "false"):
                return text == "true"
            if text in ("and", "or", "not"):
                raise ValueError(f"{text!r} where a value was expected")
            return Field(tuple(text.split(".")))
        raise ValueError(f"unexpected {text!r}")


_MISSING = object()


def _value(node: object, fields: Mapping[str, Any]) -> object:
    if isinstance(node, Field):
        cur: object = fields
        for part in node.path:
            if not isinstance(cur, Mapping) or part not in cur:
                return _MISSING
            cur = cur[part]
        return cur
    return node


def evaluate(expr: Expr, fields: Mapping[str, Any]) -> bool:
    """The condition's truth for an event's fields (missing or mismatched: false)."""
    if isinstance(expr, BoolOp):
        if expr.op == "and":
            return all(evaluate(e, fields) for e in expr.items)
        return any(evaluate(e, fields) for e in expr.items)
    if isinstance(expr, Not):
        return not evaluate(expr.inner, fields)
    if isinstance(expr, Compare):
        a, b = _value(expr.left, fields), _value(expr.right, fields)
        if a is _MISSING or b is _MISSING:
            return False
        num = (int, float)
        if isinstance(a, bool) or isinstance(b, bool):
            if not (isinstance(a, bool) and isinstance(b, bool)) or expr.op not in ("==", "!="):
                return False
        elif isinstance(a, num) and isinstance(b, num):
            if not (math.isfinite(a) and math.isfinite(b)):
                return False
        elif not (isinstance(a, str) and isinstance(b, str)):
            return False
        x: Any = a
        y: Any = b
        op = expr.op
        if op == "==":
            return bool(x == y)
        if op == "!=":
            return bool(x != y)
        if op == "<":
            return bool(x < y)
        if op == "<=":
            return bool(x <= y)
        if op == ">":
            return bool(x > y)
        return bool(x >= y)
    value = _value(expr, fields)
    return value is True


# --- actions and rules --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Action:
    """`scale` (target, mode "+", "-" or "=", amount); `create` (capabilities); `publish`."""

    verb: Literal["scale", "create", "publish"]
    target: str = ""
    mode: str = ""
    amount: int = 0
    capabilities: tuple[str, ...] = ()


def parse_action(text: object) -> Action:
    if not isinstance(text, str):
        raise ValueError("must be a string")
    words = text.split()
    if len(words) == 3 and words[0] == "scale":
        m = re.fullmatch(r"([+=-])([0-9]{1,4})", words[2])
        if not _NAME_RE.fullmatch(words[1]) or m is None:
            raise ValueError("give scale NAME +N, -N or =N")
        return Action("scale", target=words[1], mode=m.group(1), amount=int(m.group(2)))
    if len(words) == 2 and words[0] == "create":
        caps = tuple(words[1].split(","))
        if not all(_TOPIC_RE.fullmatch(c) for c in caps):
            raise ValueError("give create CAPABILITY[,CAPABILITY...]")
        return Action("create", capabilities=caps)
    if len(words) == 2 and words[0] == "publish" and _TOPIC_RE.fullmatch(words[1]):
        return Action("publish", target=words[1])
    raise ValueError("must be scale NAME +N|-N|=N, create CAPABILITY[,...], or publish TOPIC")


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    name: str
    topic: str
    condition: Expr
    action: Action
    cooldown: float = 60.0
    trailing: bool = False
    when: str = ""  # the condition's text, kept so a manifest's table round-trips
    do: str = ""  # the action's text

    def to_table(self) -> dict[str, Any]:
        table: dict[str, Any] = {"name": self.name, "on": self.topic}
        if self.when:
            table["when"] = self.when
        table.update(do=self.do, cooldown=self.cooldown, trailing=self.trailing)
        return table


def rules_from_table(
    value: object, source: str = "<rules>", key: str = "rules"
) -> tuple[Rule, ...]:
    """Validate `[[rules]]` (a list of tables).

    Raises:
        RuleError: one line naming the source and the key (`rules[2].when`).
    """
    if not isinstance(value, list) or len(value) > MAX_RULES:
        raise RuleError(source, key, f"must be a list of at most {MAX_RULES} tables")
    out: list[Rule] = []
    names: set[str] = set()
    for i, t in enumerate(value):
        at = f"{key}[{i}]"
        if not isinstance(t, Mapping):
            raise RuleError(source, at, "must be a table")
        for k in t:
            if k not in _KEYS:
                raise RuleError(
                    source, f"{at}.{k}", f"unknown key (known: {', '.join(sorted(_KEYS))})"
                )
        for k in ("name", "on", "do"):
            if k not in t:
                raise RuleError(source, f"{at}.{k}", "is required")
        name = t["name"]
        if type(name) is not str or not _NAME_RE.fullmatch(name):
            raise RuleError(source, f"{at}.name", "must be a lowercase name of letters, digits, -")
        if name in names:
            raise RuleError(source, f"{at}.name", f"{name!r} is used twice")
        names.add(name)
        topic = t["on"]
        if type(topic) is not str or not _TOPIC_RE.fullmatch(topic):
            raise RuleError(source, f"{at}.on", "must be a topic like task.created")
        try:
            cond: Expr = parse_condition(t["when"]) if "when" in t else True
        except ValueError as exc:
            raise RuleError(source, f"{at}.when", str(exc)) from None
        try:
            action = parse_action(t["do"])
        except ValueError as exc:
            raise RuleError(source, f"{at}.do", str(exc)) from None
        cooldown = t.get("cooldown", 60)
        if type(cooldown) not in (int, float) or not 0 <= cooldown <= 86400:
            raise RuleError(source, f"{at}.cooldown", "must be seconds from 0 to 86400")
        trailing = t.get("trailing", False)
        if type(trailing) is not bool:
            raise RuleError(source, f"{at}.trailing", "must be true or false")
        out.append(
            Rule(
                name=name,
                topic=topic,
                condition=cond,
                action=action,
                cooldown=float(cooldown),
                trailing=trailing,
                when=t.get("when", ""),
                do=t["do"],
            )
        )
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Fired:
    rule: str
    action: Action
    event: Mapping[str, Any]


@dataclass(slots=True)
class RuleEngine:
    rules: tuple[Rule, ...]
    _last: dict[str, float] = field(default_factory=dict)
    _pending: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    def handle_event(self, topic: str, fields: Mapping[str, Any], now: float) -> list[Fired]:
        out = []
        for rule in self.rules:
            if rule.topic != topic or not evaluate(rule.condition, fields):
                continue
            last = self._last.get(rule.name)
            if last is not None and now < last + rule.cooldown:
                if rule.trailing:
                    self._pending[rule.name] = fields
                continue
            self._last[rule.name] = now
            out.append(Fired(rule.name, rule.action, fields))
        return out

    def get_timer(self) -> float | None:
        due = [self._last[r.name] + r.cooldown for r in self.rules if r.name in self._pending]
        return min(due, default=None)

    def handle_timer(self, now: float) -> list[Fired]:
        out = []
        for rule in self.rules:
            event = self._pending.get(rule.name)
            if event is not None and now >= self._last[rule.name] + rule.cooldown:
                del self._pending[rule.name]
                self._last[rule.name] = now
                out.append(Fired(rule.name, rule.action, event))
        return out
