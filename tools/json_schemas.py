"""Write the JSON Schemas of the sidecars and of every verb's ``--json``, inferred from real runs.

    python tools/json_schemas.py

Runs attn-deploy on the demo models at 320x320 with a small shapes dataset (three to five minutes
on two cores), in a temporary folder, and infers from each document it wrote or printed a JSON
Schema (draft 2020-12): each key's ``type`` from the values seen, ``required`` the keys every
run wrote, nested objects where ``attn_deploy/schemas.py`` describes their keys, and every
``description`` from there. Writes ``docs/reference/schemas/NAME.schema.json`` per document
and ``docs_includes/schema-fields.md`` (a table per document, stamped) for the reference page.
A key a run writes that has no description, or a described key no run writes, stops it.

Where no run is possible here (no TensorRT, no GPU, no fork), the document is made by the
code that writes it, from stand-in values, and its schema says so. ``tests/test_schemas.py``
reruns the cheap documents and holds the committed files to them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from attn_deploy.schemas import DOCUMENTS, Fields, Nested

SCHEMAS = ROOT / "docs" / "reference" / "schemas"
FIELDS_MD = ROOT / "docs_includes" / "schema-fields.md"
DRAFT = "https://json-schema.org/draft/2020-12/schema"
DEMO = ROOT / "demo" / "yolov5n-ca-shapes.pt"
ANCHOR_FREE = ROOT / "demo" / "yolo11n-ca-shapes.pt"
BLOCK_FILE = ROOT / "examples" / "blocks" / "mlca.py"
IMGSZ = "320"
TARGET = "orin-jp6"  # a box with a DLA: the sidecar's target section has its placement


class Runs:
    """The runs the documents come from, each made once, in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.done: dict[str, Any] = {}

    def once(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self.done:
            start = time.perf_counter()
            self.done[key] = make()
            print(f"json_schemas: {key} ran in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        return self.done[key]

    def path(self, name: str) -> str:
        return str(self.folder / name)

    def read(self, name: str) -> Any:
        return json.loads((self.folder / name).read_text())

    def written(self, run: Callable[[], Any], name: str) -> Any:
        """The file ``name`` that ``run`` writes (run once)."""
        run()
        return self.read(name)

    def onnx(self, stem: str) -> str:
        """The path of ``STEM.onnx`` after the run that writes it."""
        {"plain": self.export, "target": self.export_for_target, "nms": self.export_with_nms,
         "plain.int8": lambda: self.calib("int8")}[stem]()
        return self.path(f"{stem}.onnx")

    def cli(self, *args: str | Path) -> Any:
        """``attn-deploy ARGS --json``: the document it printed, gate passed or not (exit 0 or 1);
        bad input or a bug stops the tool."""
        from click.testing import CliRunner

        from attn_deploy.cli import main

        words = [str(a) for a in args]
        result = CliRunner().invoke(main, [*words, "--json"])
        if result.exit_code not in (0, 1) or not result.stdout.strip():
            raise RuntimeError(f"attn-deploy {' '.join(words)} --json: exit {result.exit_code}: {result.stderr[-800:]}")
        return json.loads(result.stdout)

    def data(self) -> str:
        def make() -> str:
            from attn_deploy.train.shapes import ShapesSpec, write_dataset

            return str(write_dataset(self.folder / "shapes", 8, 8, ShapesSpec(seed=0)))

        return self.once("data", make)

    def export(self) -> Any:
        """The demo model, plain: ``plain.onnx`` + ``plain.json``."""
        return self.once("export", lambda: self.cli("export", "--weights", DEMO, "--imgsz", IMGSZ, "-o", self.path("plain.onnx")))

    def export_for_target(self) -> Any:
        """The anchor-free demo for a box: ``target.onnx`` + ``target.json``."""
        return self.once("export_target", lambda: self.cli(
            "export", "--weights", ANCHOR_FREE, "--imgsz", IMGSZ, "--target", TARGET, "-o", self.path("target.onnx")))

    def export_with_nms(self) -> Any:
        """The demo with dynamic sizes and an NMS tail, unchecked: ``nms.onnx`` + ``nms.json``."""
        return self.once("export_nms", lambda: self.cli(
            "export", "--weights", DEMO, "--imgsz", IMGSZ, "--dynamic", "--nms", "--no-check", "-o", self.path("nms.onnx")))

    def calib(self, precision: str) -> Any:
        """fp16 of the target's graph; int8 of the plain one, searched (--exclude auto), per-layer
        method, with a cache (every key holds a value)."""
        src = "target" if precision == "fp16" else "plain"
        self.onnx(src)
        extra = ["--method", "best", "--cache", self.path("plain.cache")] if precision == "int8" else []
        return self.once(f"calib-{precision}", lambda: self.cli(
            "calib", self.path(f"{src}.onnx"), "--precision", precision, "--data", self.data(), "--images", "8", *extra))

    def ship(self) -> Any:
        return self.once("ship", lambda: self.cli("ship", "--weights", DEMO, "--imgsz", IMGSZ, "--precision", "fp16",
                                                  "--data", self.data(), "--calib-images", "8", "-o", self.path("ship")))

    def parity(self, full: bool) -> Any:
        """``full``: labelled images and --per-block; else unlabelled images, tensors and detections only."""
        self.export()
        if full:
            args = ["--data", self.data(), "--per-block", "--block-images", "2"]
        else:
            args = ["--data", str(Path(self.data()).parent / "images" / "val")]
        return self.once(f"parity-{full}", lambda: self.cli(
            "parity", "--weights", DEMO, "--against", self.path("plain.onnx"), "--max-images", "4", *args))


def _engine_sidecars(runs: Runs) -> list[dict[str, Any]]:
    """What ``build`` writes, made by its own function from stand-in facts (no TensorRT here): one
    engine with everything (INT8 from a cache, a profile, a DLA core of a target), one with nothing."""
    from attn_deploy.engines.build import BuildOptions, EngineFacts, Plan, _dla_placement, engine_sidecar
    from attn_deploy.files import sha256
    from attn_deploy.onnxfile import read_onnx
    from attn_deploy.targets import get_target

    src = Path(runs.onnx("plain"))
    digest, export = sha256(src.read_bytes()), runs.read("plain.json")
    cache = runs.folder / "stand-in.cache"
    cache.write_text("TRT-8600-EntropyCalibration2\nimages: 3c010a14\n")
    full = BuildOptions("int8", dla_core=0, gpu_fallback=True, calib_cache=cache, target=get_target(TARGET))
    profile = ("images", ((1, 3, 320, 320), (4, 3, 320, 320), (8, 3, 320, 320)))
    made = EngineFacts("10.3.0", {"name": "stand-in GPU", "compute_capability": "8.7"},
                       Plan(int8=True, note="implicit INT8 from the calibration cache"), "fp32", profile,
                       _dla_placement(read_onnx(src), full, src.name))
    bare = EngineFacts("10.3.0", None, Plan(), "fp32")
    return [engine_sidecar(src.name, digest, export, full, made, 12.3),
            engine_sidecar(src.name, digest, export, BuildOptions("fp32"), bare, 4.5)]


def _build_json(runs: Runs) -> list[Any]:
    from attn_deploy.engines.build import BuildResult

    return [BuildResult(Path(runs.path("plain.engine")), side).to_dict() for side in _engine_sidecars(runs)]


def _verify_json(runs: Runs) -> list[Any]:
    """What ``verify`` prints, made by VerifyResult from stand-in layers (the fork's code is not run here)."""
    import numpy as np

    from attn_deploy.diagnose.blocks import ErrorStats
    from attn_deploy.diagnose.fork import LayerCheck, VerifyResult

    stats = ErrorStats()
    stats.add(np.ones(4, np.float32), np.ones(4, np.float32))
    layers = [LayerCheck(0, "Conv", "Conv", [1, 16, 160, 160], stats), LayerCheck(24, "Detect", "Detect", None)]
    from attn_deploy.models.attention.base import Reading

    reading = Reading("layer 9 (CBAM): the spatial gate's plane order", "(max, mean)", None).to_dict()
    return [VerifyResult(DEMO.name, "yolov5", 2, (320, 320), layers, stats, stats, [reading]).to_dict()]


def _bench_on_gpu() -> dict[str, Any]:
    """A bench result as a GPU run makes it (per-part latencies), from BenchResult with stand-in timings."""
    from attn_deploy.engines.bench import BenchResult, LatencyStats

    ms = LatencyStats.from_ms([1.0, 1.2, 1.1])
    return BenchResult("m.engine", "trt", "fp16", 1, (320, 320), "stand-in GPU", ms, 3,
                       {"h2d": ms, "compute": ms, "d2h": ms}).to_dict()


@dataclass(frozen=True)
class Source:
    """How a document's instances are made: ``docs(runs)``, and in words ``how`` (``code``: no
    run here makes it; the code that writes it does, from stand-in values)."""

    docs: Callable[[Runs], list[Any]]
    how: str
    code: bool = False


RUN = f"the demo `yolov5n-ca-shapes.pt` at {IMGSZ}"
BENCH = ("--iterations", "3", "--warmup", "0")
GPU = "and `BenchResult.to_dict` with stand-in GPU timings (the per-part latencies exist only on a GPU)"
SOURCES: dict[str, Source] = {
    "export-sidecar": Source(
        lambda r: [r.written(r.export, "plain.json"), r.written(r.export_for_target, "target.json"),
                   r.written(r.export_with_nms, "nms.json")],
        f"`export` of {RUN}; of `yolo11n-ca-shapes.pt` with `--target {TARGET}`; of the first with "
        "`--dynamic --nms --no-check`"),
    "precision-sidecar": Source(
        lambda r: [r.written(lambda: r.calib("fp16"), "target.fp16.json"), r.written(lambda: r.calib("int8"), "plain.int8.json")],
        "`calib --precision fp16` of the export for the target; `calib --precision int8 --method best --cache FILE` "
        "of the first export (8 images)"),
    "engine-sidecar": Source(
        _engine_sidecars, "`engines/build.py: engine_sidecar` with stand-in values (no TensorRT here): INT8 from a "
        f"calibration cache, a dynamic profile, DLA core 0 of {TARGET}; and fp32 with none of them", code=True),
    "ship": Source(lambda r: [r.ship(), r.read("ship/ship.json")],
                   f"`ship --precision fp16` of {RUN} (no TensorRT: its build step is skipped): its `--json` and ship.json"),
    "ship-report": Source(lambda r: [r.written(r.ship, "ship/report.json")], "the same `ship` run's report.json"),
    "models": Source(lambda r: [r.cli("models")], "`models --json`"),
    "info": Source(lambda r: [r.cli("info", "--weights", DEMO, "--imgsz", IMGSZ)], f"`info --json` of {RUN}"),
    "targets": Source(lambda r: [r.cli("targets")], "`targets --json`"),
    "export": Source(lambda r: [r.export(), r.export_for_target(), r.export_with_nms()],
                     "the export sidecar's three `export` runs"),
    "lint": Source(lambda r: [r.cli("lint", r.onnx("plain"))], f"`lint --json` of the export of {RUN}"),
    "lint-targets": Source(lambda r: [r.cli("lint", r.onnx("plain"), "--target", TARGET, "--target", "server-trt10")],
                           f"`lint --target {TARGET} --target server-trt10 --json` of the export of {RUN}"),
    "blocks": Source(lambda r: [r.cli("blocks", BLOCK_FILE)], "`blocks examples/blocks/mlca.py --json`"),
    "parity": Source(lambda r: [r.parity(True), r.parity(False)],
                     f"`parity --json` of the export of {RUN}: on 4 labelled images with `--per-block`, and on 4 "
                     "unlabelled ones"),
    "verify": Source(_verify_json, "`diagnose/fork.py: VerifyResult.to_dict` with stand-in layers (no fork here)",
                     code=True),
    "calib": Source(lambda r: [r.calib("fp16"), r.calib("int8")], "the precision sidecar's two `calib` runs"),
    "build": Source(_build_json, "`engines/build.py: BuildResult.to_dict` with the engine sidecar's stand-in values",
                    code=True),
    "bench": Source(lambda r: [r.cli("bench", r.onnx("plain"), *BENCH), _bench_on_gpu()],
                    f"`bench --iterations 3 --json` of the export of {RUN} (ONNX Runtime on the CPU), {GPU}"),
    "bench-compare": Source(lambda r: [r.cli("bench", r.onnx("plain"), r.onnx("plain.int8"), "--compare", *BENCH,
                                             "-o", r.path("bench")), {"results": [_bench_on_gpu()]}],
                            f"`bench --compare --iterations 3 --json` of that export and its int8 graph, {GPU}"),
    "serve": Source(lambda r: [r.cli("serve", r.onnx("plain"), "--repository", r.path("repository"))],
                    f"`serve --json` of the export of {RUN}"),
}
FILES = ("export-sidecar", "precision-sidecar", "engine-sidecar", "ship", "ship-report")  # the rest: --json only


class Drift(Exception):
    """The documents and ``attn_deploy/schemas.py`` disagree on which keys there are."""


def json_type(value: Any) -> str:
    for kind, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (list, "array"),
                       (dict, "object")):
        if isinstance(value, kind):
            return name
    return "null"


def _types(values: list[Any]) -> str | list[str]:
    names = {json_type(v) for v in values}
    if "number" in names:
        names.discard("integer")  # an integer is a number: 0 and 0.5 seen is a number
    return min(names) if len(names) == 1 else sorted(names)


def _object(objects: list[dict[str, Any]], fields: Fields, where: str, problems: list[str]) -> dict[str, Any]:
    """Properties (described keys), and required: the keys every object has."""
    seen = set().union(*objects)
    problems += [f"{where}{k}: written by a run, not described" for k in sorted(seen - fields.keys())]
    problems += [f"{where}{k}: described, written by no run" for k in sorted(fields.keys() - seen)]
    props = {k: _field([o[k] for o in objects if k in o], fields[k], f"{where}{k}", problems)
             for k in sorted(seen & fields.keys())}
    return {"properties": props, "required": sorted(set.intersection(*(set(o) for o in objects)))}


def _field(values: list[Any], field: str | Nested, where: str, problems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"description": field.description if isinstance(field, Nested) else field,
                           "type": _types(values)}
    if not isinstance(field, Nested):
        return out
    objects = [v for v in values if isinstance(v, dict)]
    items = [x for v in values if isinstance(v, list) for x in v]
    if objects:
        out.update(_object(objects, field.fields, f"{where}.", problems))
    if items and all(isinstance(x, dict) for x in items):
        out["items"] = {"type": "object", **_object(items, field.fields, f"{where}[].", problems)}
    elif not objects:
        problems.append(f"{where}: described as nested, but no run wrote an object there")
    return out


def infer(name: str, docs: list[Any]) -> dict[str, Any]:
    """The JSON Schema of the document ``name`` from its instances ``docs``; ``Drift`` when a key
    is written but not described, or described but never written."""
    doc, problems = DOCUMENTS[name], []
    if all(isinstance(d, list) for d in docs):  # blocks --json: a list of objects
        body = {"type": "array", "items": {"type": "object", **_object([x for d in docs for x in d], doc.fields, "[].", problems)}}
    else:
        body = {"type": "object", **_object(docs, doc.fields, "", problems)}
    if problems:
        raise Drift(f"{name}: " + "; ".join(problems) + " (describe it in attn_deploy/schemas.py, or drop it there, "
                    "then run python tools/json_schemas.py)")
    source = SOURCES[name]
    made = "Made by the code, not by a run: " if source.code else "Inferred from real runs: "
    return {"$schema": DRAFT, "title": doc.title, "description": doc.about, **body,
            "$comment": f"Generated by tools/json_schemas.py; do not edit. {made}{source.how}."}


def validate(doc: Any, schema: dict[str, Any], where: str = "") -> list[str]:
    """What in ``doc`` breaks ``schema`` (the subset ``infer`` writes: type, properties, required, items)."""
    allowed, kind = schema.get("type"), json_type(doc)
    names = [allowed] if isinstance(allowed, str) else allowed
    if names is not None and kind not in names and not (kind == "integer" and "number" in names):
        return [f"{where or 'the document'}: {kind}, not {' or '.join(names)}"]
    problems = []
    if isinstance(doc, dict):
        inner = f"{where}." if where else ""
        problems += [f"{inner}{k}: missing" for k in schema.get("required", []) if k not in doc]
        for key, sub in schema.get("properties", {}).items():
            if key in doc:
                problems += validate(doc[key], sub, f"{inner}{key}")
    if isinstance(doc, list) and "items" in schema:
        for i, item in enumerate(doc):
            problems += validate(item, schema["items"], f"{where}[{i}]")
    return problems


def schema_text(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _rows(schema: dict[str, Any], fields: Fields, prefix: str = "") -> list[str]:
    """One table row per key, in the order ``schemas.py`` describes them, nested keys after their
    parent (``head.kind``, ``layers[].module``)."""
    rows = []
    required, props = set(schema.get("required", [])), schema.get("properties", {})
    for key in [k for k in fields if k in props]:
        sub, field = props[key], fields[key]
        kind = sub["type"] if isinstance(sub["type"], str) else " or ".join(sub["type"])
        kind += "" if key in required else " (optional)"
        rows.append(f"| `{prefix}{key}` | {kind} | {sub['description']} |")
        if isinstance(field, Nested):
            rows += _rows(sub, field.fields, f"{prefix}{key}.")
            if "items" in sub:
                rows += _rows(sub["items"], field.fields, f"{prefix}{key}[].")
    return rows


def fields_markdown(schemas: dict[str, dict[str, Any]], stamp: str) -> str:
    """The reference page's tables, stamped on the first line: a snippet section per file
    document, one for all the verbs'."""
    def table(name: str) -> list[str]:
        s = schemas[name]
        body = s["items"] if s["type"] == "array" else s
        where = s["$comment"].split("; do not edit. ", 1)[1]
        return [f"Schema: [{name}.schema.json](schemas/{name}.schema.json). {where}", "",
                "| key | type | description |", "|---|---|---|",
                *_rows(body, DOCUMENTS[name].fields, "[]." if s["type"] == "array" else ""), ""]

    out = [stamp, ""]  # the first line: the page includes it as docs_includes/schema-fields.md:1:1
    for name in FILES:
        out += [f"<!-- --8<-- [start:{name}] -->", *table(name), f"<!-- --8<-- [end:{name}] -->", ""]
    out.append("<!-- --8<-- [start:verbs] -->")
    for name in [n for n in schemas if n not in FILES]:
        out += [f"### {DOCUMENTS[name].title}", "", DOCUMENTS[name].about, "", *table(name)]
    return "\n".join([*out, "<!-- --8<-- [end:verbs] -->", ""])


def stamp() -> str:
    import datetime
    import platform
    from importlib.metadata import version

    return (f"Generated by `tools/json_schemas.py` on {datetime.date.today()} from a run of attn-deploy "
            f"{version('attn-deploy')} (torch {version('torch')}, onnx {version('onnx')}, onnxruntime "
            f"{version('onnxruntime')}, {platform.machine()} CPU, no TensorRT) on the demo models at {IMGSZ}x{IMGSZ} "
            "with 8 shapes images: the keys and types those runs wrote, the descriptions from "
            "`attn_deploy/schemas.py`. A key marked optional is written only in some runs; a type is what the "
            "runs wrote there.")


def generate(folder: Path, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """The schemas of ``names`` (default: every document), from runs in ``folder``."""
    if set(SOURCES) != set(DOCUMENTS):
        raise Drift(f"documents without a source here, or sources without a description: "
                    f"{sorted(set(SOURCES) ^ set(DOCUMENTS))}")
    runs = Runs(folder)
    return {name: infer(name, SOURCES[name].docs(runs)) for name in names or list(DOCUMENTS)}


def write(schemas: dict[str, dict[str, Any]], folder: Path, fields_md: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.schema.json"):
        if old.name.removesuffix(".schema.json") not in schemas:
            old.unlink()
    for name, schema in schemas.items():
        (folder / f"{name}.schema.json").write_text(schema_text(schema))
    fields_md.parent.mkdir(parents=True, exist_ok=True)
    fields_md.write_text(fields_markdown(schemas, stamp()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schemas", type=Path, default=SCHEMAS, help="where NAME.schema.json go")
    parser.add_argument("--fields", type=Path, default=FIELDS_MD, help="the generated tables (Markdown)")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep what the runs wrote")
    args = parser.parse_args(argv)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        schemas = generate(args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="json-schemas-") as tmp:
            schemas = generate(Path(tmp))
    write(schemas, args.schemas, args.fields)
    print(f"json_schemas: {len(schemas)} schemas in {args.schemas}, tables in {args.fields}")


if __name__ == "__main__":
    main()
