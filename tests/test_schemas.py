"""The JSON Schemas of the reference (docs/reference/schemas/) hold for what the verbs write now.

``tools/json_schemas.py`` infers them from runs on the demo models and takes every description
from ``attn_deploy/schemas.py``. Here: fresh documents of the cheap runs (an export, an FP16
calib, the small verbs) validate against the committed schemas and have no key they lack; the
documents whose every run is cheap infer to exactly the committed file; every key is described;
the reference page includes every generated table. The expensive runs (INT8 calib, ship, the
targeted and NMS exports: 3-5 minutes) are not repeated here, to keep CI in its budget: a key they
add or drop is still caught by the cheap runs' documents where they share it, and always by
``python tools/json_schemas.py``, which stops on a key that is written and not described.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from attn_deploy.schemas import DOCUMENTS, descriptions

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import json_schemas as tool  # tools/ is not a package

RERUN = "run `python tools/json_schemas.py` and commit what it writes"
# documents whose every run is cheap: inferred again whole, they must equal the committed file
CHEAP = ("models", "targets", "info", "lint", "lint-targets", "blocks", "serve", "bench", "verify", "engine-sidecar",
         "build")


def committed(name: str) -> dict[str, Any]:
    path = tool.SCHEMAS / f"{name}.schema.json"
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing: {RERUN}"
    return json.loads(path.read_text())


def unknown_keys(doc: Any, schema: dict[str, Any], where: str = "") -> list[str]:
    """Keys of ``doc`` that ``schema`` does not list, where it lists the keys of that object."""
    out = []
    if isinstance(doc, dict) and "properties" in schema:
        for key, value in doc.items():
            sub = schema["properties"].get(key)
            out += [f"{where}{key}"] if sub is None else unknown_keys(value, sub, f"{where}{key}.")
    if isinstance(doc, list) and "items" in schema:
        for item in doc:
            out += unknown_keys(item, schema["items"], f"{where}[].")
    return sorted(set(out))


def flat(schema: dict[str, Any], where: str = "") -> dict[str, Any]:
    """key path -> (type, required?, description), to name what differs between two schemas."""
    out = {}
    required = set(schema.get("required", []))
    for key, sub in schema.get("properties", {}).items():
        out[where + key] = (sub.get("type"), key in required, sub.get("description"))
        out.update(flat(sub, f"{where}{key}."))
        if "items" in sub:
            out.update(flat(sub["items"], f"{where}{key}[]."))
    if "items" in schema and not where:
        out.update(flat(schema["items"], "[]."))
    return out


def differences(fresh: dict[str, Any], old: dict[str, Any]) -> list[str]:
    a, b = flat(fresh), flat(old)
    return ([f"new key {k}" for k in sorted(a.keys() - b.keys())] + [f"gone: {k}" for k in sorted(b.keys() - a.keys())]
            + [f"{k}: now {a[k]}, committed {b[k]}" for k in sorted(a.keys() & b.keys()) if a[k] != b[k]])


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Any]]:
    """Documents of the cheap runs, written now: name -> instances."""
    runs = tool.Runs(tmp_path_factory.mktemp("schemas"))
    docs = {name: tool.SOURCES[name].docs(runs) for name in CHEAP}
    runs.cli("calib", runs.onnx("plain"), "--precision", "fp16", "--data", runs.data(), "--images", "8")
    docs["export-sidecar"] = [runs.read("plain.json")]
    docs["export"] = [runs.export()]
    docs["precision-sidecar"] = [runs.read("plain.fp16.json")]
    docs["calib"] = [runs.read("plain.fp16.json")["precision"]]
    return docs


def test_fresh_documents_fit_the_committed_schemas(fresh: dict[str, list[Any]]) -> None:
    wrong = []
    for name, docs in fresh.items():
        schema = committed(name)
        for doc in docs:
            wrong += [f"{name}: {k}: a key the schema lacks" for k in unknown_keys(doc, schema)]
            wrong += [f"{name}: {p}" for p in tool.validate(doc, schema)]
    assert not wrong, "\n".join(sorted(set(wrong))) + f"\n(describe new keys in attn_deploy/schemas.py, then {RERUN})"


def test_cheap_documents_infer_to_the_committed_schemas(fresh: dict[str, list[Any]]) -> None:
    wrong = []
    for name in CHEAP:
        diff = differences(tool.infer(name, fresh[name]), committed(name))
        wrong += [f"{name}: {d}" for d in diff]
        if not diff and tool.infer(name, fresh[name]) != committed(name):
            wrong.append(f"{name}: the title, description or comment changed")
    assert not wrong, "\n".join(wrong) + f"\n({RERUN})"


def test_every_key_has_a_description() -> None:
    for name, doc in DOCUMENTS.items():
        assert doc.title.strip() and doc.about.strip(), name
        blank = [key for key, text in descriptions(doc.fields).items() if not text.strip()]
        assert not blank, f"{name}: keys without a description in attn_deploy/schemas.py: {blank}"
    for name in DOCUMENTS:
        blank = [key for key, (_, _, text) in flat(committed(name)).items() if not (text or "").strip()]
        assert not blank, f"{name}.schema.json: keys without a description: {blank} ({RERUN})"


def test_a_key_nobody_described_stops_the_tool() -> None:
    doc = {"repository": "r", "models": ["m"], "max_batch": 1, "platform": "p"}
    assert tool.infer("serve", [doc])["required"] == sorted(doc)
    with pytest.raises(tool.Drift, match="serve: passed: written by a run, not described"):
        tool.infer("serve", [{**doc, "passed": True}])
    with pytest.raises(tool.Drift, match="platform: described, written by no run"):
        tool.infer("serve", [{k: v for k, v in doc.items() if k != "platform"}])
    problems = tool.validate({"results": [{"target": 3}]}, committed("bench-compare"))
    assert "results[0].target: integer, not string" in problems and "results[0].latency_ms: missing" in problems


def test_the_page_shows_every_generated_table() -> None:
    """fields.md is what the tool makes of the committed schemas; the page includes all of it."""
    names = sorted(p.name.removesuffix(".schema.json") for p in tool.SCHEMAS.glob("*.schema.json"))
    assert names == sorted(DOCUMENTS), f"schema files and attn_deploy/schemas.py differ: {RERUN}"
    text = tool.FIELDS_MD.read_text()
    stamp = text.splitlines()[0]
    assert stamp.startswith("Generated by `tools/json_schemas.py` on ") and re.search(r"\d{4}-\d\d-\d\d", stamp)
    assert text == tool.fields_markdown({n: committed(n) for n in DOCUMENTS}, stamp), f"fields.md is stale: {RERUN}"
    page = (ROOT / "docs" / "reference" / "sidecars.md").read_text()
    included = re.findall(r'^--8<-- "docs_includes/schema-fields\.md:([\w:-]+)"$', page, re.MULTILINE)
    sections = re.findall(r"\[start:([\w-]+)\]", text)
    assert sorted(included) == sorted(["1:1", *sections]), "the page must include the stamp and every section"
    assert not [line for line in page.splitlines() if line.startswith("|")], "the page types no table"

