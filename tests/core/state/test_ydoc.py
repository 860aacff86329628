"""Values in the shared Doc: refusals, paths, write/read round trips, the schema, and imports."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import pycrdt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kai_mesh.core.errors import AddressError, Malformed, UsageError
from kai_mesh.core.state import ydoc

NODE_A = "0123456789abcdef0123456789abcdef"
NODE_B = "fedcba9876543210fedcba9876543210"


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


# --- check_value -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": {"b": 2**53}}, "integer at shared/x/a/b is beyond"),
        ({"a": [0, -(2**64)]}, "integer at shared/x/a[1] is beyond"),
        ({"n": math.nan}, "number at shared/x/n is nan"),
        ({"n": [math.inf]}, "number at shared/x/n[0] is inf"),
        ({"n": -math.inf}, "number at shared/x/n is -inf"),
        ({"t": (1, 2)}, "value at shared/x/t is a tuple"),
        ({"b": b"raw"}, "value at shared/x/b is a bytes"),
        ({"s": {1, 2}}, "value at shared/x/s is a set"),
        ({"o": object()}, "value at shared/x/o is a object"),
        ({"k": {3: "x"}}, "key 3 at shared/x/k is not a string"),
        ({"k": {"": 1}}, "key '' at shared/x/k must be non-empty"),
        ({"k": {"a/b": 1}}, "key 'a/b' at shared/x/k must be non-empty and contain no '/'"),
        ({"k": {"x" * 257: 1}}, "at shared/x/k is 257 bytes long"),
        ({"s": "x" * (64 * 1024 + 1)}, "string at shared/x/s is 65537 bytes long"),
        ({"s": "\ud800"}, "string at shared/x/s is not valid Unicode"),
        ({"t": {"$text": 5}}, "'$text' at shared/x/t marks a Text"),
        ({"t": {"$text": "a", "b": 1}}, "'$text' at shared/x/t marks a Text"),
        ({"t": {"$text": "é" * 40000}}, "string at shared/x/t is 80000 bytes long"),
        ({"deep": nested(33)}, "value at shared/x/deep[0][0]"),
    ],
)
def test_check_value_refuses_and_names_the_path(value: Any, message: str) -> None:
    with pytest.raises(UsageError) as info:
        ydoc.check_value(value, path="shared/x")
    assert message in str(info.value)


def test_check_value_top_level_and_advice() -> None:
    with pytest.raises(UsageError, match=r"at the top level .*store larger numbers as strings"):
        ydoc.check_value(2**64)
    with pytest.raises(UsageError, match="more than 32 levels deep"):
        ydoc.check_value(nested(33))
    with pytest.raises(UsageError, match="at the top level is a bytearray, which is not JSON"):
        ydoc.check_value(bytearray(b"x"))


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        2**53 - 1,
        -(2**53 - 1),
        1e308,
        -0.0,
        "x" * (64 * 1024),
        nested(32),
        {"$text": ""},
        {"k" * 256: [1, {"a": None}]},
        {"ü": "ünïcødé 🚀"},
    ],
)
def test_check_value_accepts(value: Any) -> None:
    ydoc.check_value(value)


# --- paths --------------------------------------------------------------------------------------


def test_parse_path() -> None:
    assert ydoc.parse_path("shared/notes/today") == ("shared", "notes", "today")
    assert ydoc.parse_path("tasks") == ("tasks",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "starts with one of services, tasks, shared"),
        ("members/x", "starts with one of"),
        ("/shared/x", "starts with one of"),
        ("shared//x", "segment '' must be non-empty"),
        ("shared/x/", "segment '' must be non-empty"),
        ("shared/" + "k" * 257, "is 257 bytes long"),
        ("/".join(["shared"] + ["k"] * 32), "more than 32 segments"),
    ],
)
def test_parse_path_refuses(text: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        ydoc.parse_path(text)
    assert message in str(info.value)


def test_parse_path_refuses_non_strings() -> None:
    with pytest.raises(UsageError, match="a path is a string"):
        ydoc.parse_path(b"shared/x")  # type: ignore[arg-type]


# --- write / read / delete ----------------------------------------------------------------------


def test_write_read_round_trip_keeps_ints_ints() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    value = {"n": 42, "neg": -7, "max": 2**53 - 1, "f": 1.5, "ok": True, "none": None, "s": "é"}
    ydoc.write(doc, "shared/a/b", value)
    got = ydoc.read(doc, "shared/a/b")
    assert got == value
    assert type(got["n"]) is int and type(got["max"]) is int and type(got["f"]) is float
    assert type(got["ok"]) is bool
    assert ydoc.read(doc, ("shared", "a")) == {"b": value}
    assert ydoc.read(doc) == {"services": {}, "tasks": {}, "shared": {"a": {"b": value}}}


def test_text_reads_as_str_or_marker() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    ydoc.write(doc, "shared/notes", {"today": {"$text": "hello"}, "list": [{"$text": "x"}]})
    notes = pycrdt.Map.__getitem__(doc.get("shared", type=pycrdt.Map), "notes")
    assert isinstance(notes["today"], pycrdt.Text)
    assert ydoc.read(doc, "shared/notes") == {"today": "hello", "list": ["x"]}
    assert ydoc.read(doc, "shared/notes", keep_text=True) == {
        "today": {"$text": "hello"},
        "list": [{"$text": "x"}],
    }


def test_long_lists_keep_their_order() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    value = [{"i": i, "sub": list(range(i % 3))} for i in range(ydoc.FORWARD_MAX + 100)]
    value[7]["sub"] = list(range(ydoc.FORWARD_MAX + 1))
    ydoc.write(doc, "shared/big", value)
    assert ydoc.read(doc, "shared/big") == value
    other: pycrdt.Doc[Any] = pycrdt.Doc()
    other.apply_update(ydoc.export_update(doc))
    assert ydoc.read(other, "shared/big") == value


def test_write_inside_the_callers_transaction_is_one_update() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    with doc.transaction():
        ydoc.write(doc, "shared/a", 1)
        ydoc.write(doc, "tasks/t", {"x": [1, 2]})
    assert len(updates) == 1


def test_write_replaces_and_delete_removes() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    ydoc.write(doc, "shared/a", {"x": 1})
    ydoc.write(doc, "shared/a", [1, 2])
    assert ydoc.read(doc, "shared") == {"a": [1, 2]}
    ydoc.delete(doc, "shared/a")
    assert ydoc.read(doc, "shared") == {}
    with pytest.raises(UsageError, match="no such path 'shared/a'"):
        ydoc.delete(doc, "shared/a")


def test_write_and_read_refusals() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    with pytest.raises(UsageError, match="cannot replace the root 'shared'"):
        ydoc.write(doc, "shared", {})
    with pytest.raises(UsageError, match="cannot delete the root"):
        ydoc.delete(doc, ("tasks",))
    with pytest.raises(UsageError, match="shared/a is beyond"):
        ydoc.write(doc, "shared/a", 2**64)
    ydoc.write(doc, "shared/a", 5)
    with pytest.raises(UsageError, match="'shared/a' is not a map"):
        ydoc.write(doc, "shared/a/b", 1)
    with pytest.raises(UsageError, match="no such path 'shared/b'"):
        ydoc.read(doc, "shared/b")
    with pytest.raises(UsageError, match="no such path 'shared/b'"):
        ydoc.read(doc, "shared/b/c")
    with pytest.raises(UsageError, match="starts with one of"):
        ydoc.read(doc, ("nope",))
    # The path counts towards the depth limit: 31 levels fit under shared/x, 30 under shared/y/z.
    ydoc.write(doc, "shared/x", nested(31))
    with pytest.raises(UsageError, match="nested more than 32"):
        ydoc.write(doc, "shared/y/z", nested(31))
    assert ydoc.read(doc, "shared/a") == 5  # nothing was written by the refused calls


def test_read_refuses_content_write_cannot_make() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    root = doc.get("shared", type=pycrdt.Map)
    root["raw"] = b"bytes"
    root["xml"] = pycrdt.XmlFragment()
    with pytest.raises(Malformed, match="shared/raw is a bytearray"):
        ydoc.read(doc, "shared/raw")
    with pytest.raises(Malformed, match="shared/xml is a XmlFragment"):
        ydoc.read(doc, "shared/xml")


# --- the schema ---------------------------------------------------------------------------------


def test_services_and_placement() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    ydoc.put_service(doc, "web", {"image": "nginx", "port": 80})
    ydoc.place_service(doc, "web", NODE_A)
    ydoc.place_service(doc, "web", NODE_B)
    ydoc.place_service(doc, "web", NODE_A)
    ydoc.put_service(doc, "web", {"image": "nginx", "port": 8080})  # keeps the placement
    assert ydoc.services(doc) == {
        "web": {"spec": {"image": "nginx", "port": 8080}, "placement": [NODE_A, NODE_B]}
    }
    with pytest.raises(UsageError, match="no such service 'db'"):
        ydoc.place_service(doc, "db", NODE_A)
    with pytest.raises(UsageError, match="32 lower-case hex digits"):
        ydoc.place_service(doc, "web", NODE_A.upper())
    with pytest.raises(AddressError):
        ydoc.put_service(doc, "Bad Name", {})
    with pytest.raises(UsageError, match="a service spec is a dict"):
        ydoc.put_service(doc, "web", [])  # type: ignore[arg-type]


def test_concurrent_placements_merge_and_duplicates_show_once() -> None:
    a: pycrdt.Doc[Any] = pycrdt.Doc()
    ydoc.put_service(a, "web", {})
    b: pycrdt.Doc[Any] = pycrdt.Doc()
    b.apply_update(a.get_update())
    ydoc.place_service(a, "web", NODE_A)
    ydoc.place_service(b, "web", NODE_A)
    ydoc.place_service(b, "web", NODE_B)
    a.apply_update(b.get_update())
    b.apply_update(a.get_update())
    assert ydoc.services(a) == ydoc.services(b)
    assert sorted(ydoc.services(a)["web"]["placement"]) == [NODE_A, NODE_B]


def test_tasks_and_shared() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    ydoc.put_task(doc, "job-1", {"steps": [1, 2], "note": {"$text": "hi"}})
    ydoc.write(doc, "shared/k", {"v": 1})
    assert ydoc.tasks(doc) == {"job-1": {"steps": [1, 2], "note": "hi"}}
    assert ydoc.shared(doc) == {"k": {"v": 1}}
    with pytest.raises(UsageError, match="a task spec is a dict"):
        ydoc.put_task(doc, "job-2", "x")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="segment '' must be non-empty"):
        ydoc.put_task(doc, "", {})


# --- import -------------------------------------------------------------------------------------


def test_import_values_keeps_text_as_marker_and_fills_missing_roots() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    ydoc.write(doc, "shared/notes", {"today": {"$text": "hello"}, "n": 3})
    values = ydoc.import_values(ydoc.export_update(doc))
    assert values == {
        "services": {},
        "tasks": {},
        "shared": {"notes": {"today": {"$text": "hello"}, "n": 3}},
    }
    again: pycrdt.Doc[Any] = pycrdt.Doc()
    ydoc.write(again, "shared/notes", values["shared"]["notes"])
    assert ydoc.read(again, keep_text=True) == ydoc.read(doc, keep_text=True)


def test_import_values_refuses_what_write_would() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    root = doc.get("shared", type=pycrdt.Map)
    root["raw"] = b"bytes"
    with pytest.raises(Malformed, match="shared/raw is a bytearray"):
        ydoc.import_values(doc.get_update())
    doc = pycrdt.Doc()
    doc.get("tasks", type=pycrdt.Map)["a/b"] = 1
    with pytest.raises(Malformed, match="key 'a/b' at tasks"):
        ydoc.import_values(doc.get_update())
    with pytest.raises(UsageError, match="an update is bytes"):
        ydoc.import_values("x")  # type: ignore[arg-type]


def _panic_class() -> type[BaseException]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    try:
        doc.get("shared", type=pycrdt.Map)["x"] = 2**64
    except BaseException as exc:
        return type(exc)
    raise AssertionError("pycrdt no longer panics at 2**64")


def test_import_values_turns_a_pyo3_panic_into_malformed(monkeypatch: pytest.MonkeyPatch) -> None:
    panic = _panic_class()
    assert not issubclass(panic, Exception)

    def explode(self: object, update: bytes) -> None:
        raise panic("boom")

    monkeypatch.setattr(pycrdt.Doc, "apply_update", explode)
    with pytest.raises(Malformed, match="PanicException: boom"):
        ydoc.import_values(b"\x00\x00")

    def interrupt(self: object, update: bytes) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pycrdt.Doc, "apply_update", interrupt)
    with pytest.raises(KeyboardInterrupt):
        ydoc.import_values(b"\x00\x00")


@given(st.binary(max_size=200))
def test_import_values_of_random_bytes_raises_only_malformed(data: bytes) -> None:
    try:
        values = ydoc.import_values(data)
    except Malformed:
        return
    assert set(values) == set(ydoc.ROOTS)


_SAMPLE: pycrdt.Doc[Any] = pycrdt.Doc()
ydoc.write(_SAMPLE, "shared/s", {"a": [1, {"b": {"$text": "xy"}}, "z" * 40], "c": 2.5})
ydoc.put_service(_SAMPLE, "web", {"port": 80})
ydoc.place_service(_SAMPLE, "web", NODE_A)
_UPDATE = ydoc.export_update(_SAMPLE)


@given(st.lists(st.tuples(st.integers(0, len(_UPDATE) - 1), st.integers(0, 255)), max_size=4))
def test_import_values_of_damaged_updates_raises_only_malformed(
    edits: list[tuple[int, int]],
) -> None:
    damaged = bytearray(_UPDATE)
    for where, byte in edits:
        damaged[where] = byte
    with contextlib.suppress(Malformed):
        ydoc.import_values(bytes(damaged))


# --- properties ---------------------------------------------------------------------------------

# "." and ".." are refused as keys (no path parts in the shared doc: issue 15, finding 14)
keys = st.text(min_size=1, max_size=12).filter(
    lambda k: "/" not in k and k != ydoc.TEXT_KEY and k not in (".", "..")
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-ydoc.MAX_SAFE_INT, ydoc.MAX_SAFE_INT),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
texts = st.builds(lambda s: {ydoc.TEXT_KEY: s}, st.text(max_size=20))
values = st.recursive(
    scalars | texts,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=30,
)


def assert_same(written: Any, got: Any) -> None:
    """Equal, with ints still ints and bools still bools (a float may come back as an int)."""
    if isinstance(written, int):  # bool included: type(got) must match exactly
        assert type(got) is type(written) and got == written
    elif isinstance(written, float):
        assert isinstance(got, int | float) and not isinstance(got, bool) and got == written
    elif isinstance(written, list):
        assert isinstance(got, list) and len(got) == len(written)
        for w, g in zip(written, got, strict=True):
            assert_same(w, g)
    elif isinstance(written, dict):
        assert isinstance(got, dict) and got.keys() == written.keys()
        for key in written:
            assert_same(written[key], got[key])
    else:
        assert got == written


def plain(value: Any) -> Any:
    if isinstance(value, dict):
        if ydoc.TEXT_KEY in value:
            return value[ydoc.TEXT_KEY]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


@given(values)
def test_any_valid_value_round_trips(value: Any) -> None:
    ydoc.check_value(value)
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    ydoc.write(doc, "shared/v", value)
    assert_same(value, ydoc.read(doc, "shared/v", keep_text=True))
    assert_same(plain(value), ydoc.read(doc, "shared/v"))
    imported = ydoc.import_values(ydoc.export_update(doc))
    assert_same(value, imported["shared"]["v"])


def test_keys_lists_a_maps_keys_and_refuses_what_is_not_one() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    assert ydoc.keys(doc, ("tasks",)) == []
    ydoc.write(doc, ("tasks", "a"), {"spec": {"x": 1}, "claims": {}})
    ydoc.write(doc, ("tasks", "b"), 3)
    assert sorted(ydoc.keys(doc, ("tasks",))) == ["a", "b"]
    assert sorted(ydoc.keys(doc, ("tasks", "a"))) == ["claims", "spec"]
    with pytest.raises(UsageError, match="not a map"):
        ydoc.keys(doc, ("tasks", "b"))
    with pytest.raises(UsageError, match="no such path"):
        ydoc.keys(doc, ("tasks", "c", "d"))
