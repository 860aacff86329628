"""The shared Doc against the real `yjs` npm package, both ways (tests/interop/yjs_check.mjs).

Needs `node` and `npm ci --prefix tests/interop`; skips without them, and fails instead when CI
sets KAI_MESH_REQUIRE_PRIVILEGED_TESTS=1.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from kai_mesh.core.state import ydoc
from tests.conftest import skip_unless_privileged

HERE = Path(__file__).parent
SCRIPT = HERE / "yjs_check.mjs"


@pytest.fixture
def node() -> str:
    exe = shutil.which("node")
    if exe is None:
        skip_unless_privileged("the Yjs interop tests need `node` (Node.js) on PATH")
    if not (HERE / "node_modules" / "yjs" / "package.json").is_file():
        skip_unless_privileged("the Yjs interop tests need `npm ci --prefix tests/interop`")
    assert exe is not None
    return exe


def run(node: str, mode: str, file: Path) -> Any:
    done = subprocess.run(
        [node, str(SCRIPT), mode, str(file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def plain(value: Any) -> Any:
    """What Yjs's toJSON() shows: a Text as its string."""
    if isinstance(value, dict):
        if ydoc.TEXT_KEY in value:
            return value[ydoc.TEXT_KEY]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def sample_doc() -> pycrdt.Doc[Any]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    with doc.transaction():
        ydoc.put_service(doc, "web", {"image": "nginx", "port": 8080, "ratio": 0.25, "on": True})
        ydoc.place_service(doc, "web", "0123456789abcdef0123456789abcdef")
        ydoc.put_task(
            doc,
            "job-1",
            {
                "steps": [{"n": 0, "args": [1, -2.5, None]}, {"n": 1, "deep": {"x": [[{}], []]}}],
                "log": {"$text": "hello ✓ 🚀"},
                "max": 2**53 - 1,
                "min": -(2**53 - 1),
                "tiny": 5e-324,
                "huge": 1.5e300,
            },
        )
        ydoc.write(doc, "shared/notes", {"ünïcødé": "zwei Wörter", "empty": "", "off": False})
        ydoc.write(doc, "shared/long", [{"i": i} if i % 2 else i for i in range(700)])
        ydoc.write(doc, "shared/text", {"$text": "a Y.Text"})
    return doc


def test_yjs_loads_what_pycrdt_exports(node: str, tmp_path: Path) -> None:
    doc = sample_doc()
    file = tmp_path / "update.bin"
    file.write_bytes(ydoc.export_update(doc))
    assert run(node, "load", file) == ydoc.read(doc)


def test_pycrdt_imports_what_yjs_makes_and_yjs_reads_it_back(node: str, tmp_path: Path) -> None:
    made = tmp_path / "made.bin"
    expected = run(node, "make", made)
    values = ydoc.import_values(made.read_bytes())
    assert plain(values) == expected
    # Texts come back as {"$text": s}, so writing them keeps them Texts.
    assert values["tasks"]["job-1"]["log"] == {"$text": "hello world!"}
    assert values["shared"]["notes"] == {"$text": "zwei Wörter"}
    assert type(values["services"]["web"]["spec"]["port"]) is int

    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    with doc.transaction():
        for root, entries in values.items():
            for key, value in entries.items():
                ydoc.write(doc, (root, key), value)
    assert ydoc.read(doc) == expected
    assert ydoc.import_values(ydoc.export_update(doc)) == values
    again = tmp_path / "again.bin"
    again.write_bytes(ydoc.export_update(doc))
    assert run(node, "load", again) == expected
