"""Targets: the TensorRT, GPU and DLA a user's box carries, as data.

A target is what ``lint``, ``export`` and the build steps need to know about one deployment box:
its TensorRT version (and so which ONNX parser table and opsets apply), the GPU's architecture
and the precisions it runs fast, its DLA (none, Xavier's or Orin's) and how many cores, and
which builder features its TensorRT has (the implicit INT8 calibrator, the FP16 builder flag,
strongly typed networks). The named targets live in ``targets.yaml`` with the source of every
fact; ``--target`` also takes facts for a box not listed (``trt=8.6,dla=orin``), and the rest
follows from the TensorRT version by the rules written in ``from_facts``.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from attn_deploy.errors import UserError

DLA_KINDS = ("xavier", "orin")
# the parser tables on record (targets/parser/trt-V.csv), oldest first
PARSER_TABLES = ("8.2", "8.5", "8.6", "10.0", "10.15")
PRECISIONS = ("fp16", "int8")


@dataclass(frozen=True)
class OpSupport:
    op: str
    supported: bool
    types: frozenset[str]
    note: str = ""
    rules: tuple[str, ...] = ()


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    tensorrt: str  # the TensorRT version, "8.2", "10.3", "11"
    parser: str  # the parser table that stands for it (one of PARSER_TABLES)
    opsets: tuple[int, int]
    gpu: str  # architecture, e.g. "Ampere (sm_87)"
    precisions: frozenset[str]  # what the GPU runs fast: fp16, int8
    dla: str | None = None  # None, "xavier" or "orin"
    dla_cores: int = 0
    implicit_int8: bool = True  # the implicit INT8 calibrator (IInt8Calibrator) exists
    fp16_flag: bool = True  # BuilderFlag.FP16 exists
    strongly_typed: bool = False  # NetworkDefinitionCreationFlag.STRONGLY_TYPED exists
    sources: dict[str, str] = field(default_factory=dict, compare=False)  # fact -> source key
    listed: bool = True

    @property
    def version(self) -> tuple[int, ...]:
        return version_tuple(self.tensorrt)

    def source_of(self, fact: str) -> str:
        """The citation for one of this target's facts (a title and an address)."""
        key = self.sources.get(fact)
        if key is None:
            return "derived from the TensorRT version (attn_deploy/targets/__init__.py from_facts)"
        src = _data()["sources"][key]
        return f"{src['title']} ({src['url']})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "tensorrt": self.tensorrt, "parser_table": self.parser, "opsets": list(self.opsets),
            "gpu": self.gpu, "precisions": sorted(self.precisions), "dla": self.dla, "dla_cores": self.dla_cores,
            "implicit_int8": self.implicit_int8, "fp16_flag": self.fp16_flag,
            "strongly_typed": self.strongly_typed, "listed": self.listed,
        }


def version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


@cache
def _data() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(resources.files("attn_deploy.targets").joinpath("targets.yaml").read_text())


def parser_table_for(tensorrt: str) -> str:
    """The newest parser table on record not newer than ``tensorrt`` (a release's parser takes at
    least what the release before it took, so the older table is the cautious one)."""
    v = version_tuple(tensorrt)
    fit = [t for t in PARSER_TABLES if version_tuple(t) <= v]
    if not fit:
        raise UserError(f"TensorRT {tensorrt}: no parser table on record before 8.2; attn-deploy targets 8.2 and later")
    return fit[-1]


@cache
def _table_text(version: str) -> str:
    return resources.files("attn_deploy.targets").joinpath(f"parser/trt-{version}.csv").read_text()


@cache
def parser_table(version: str) -> dict[str, OpSupport]:
    """One parser table (``targets/parser/trt-VERSION.csv``), op -> support."""
    text = _table_text(version)
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return {r["op"]: OpSupport(r["op"], r["supported"] == "Y", frozenset(r["types"].split()), r.get("note") or "",
                               tuple((r.get("rules") or "").split())) for r in rows}


def table_source(version: str) -> str:
    """What a parser table was made from (its second comment line)."""
    lines = [ln.lstrip("# ").rstrip(".") for ln in _table_text(version).splitlines()[:2]]
    return lines[1].removeprefix("Made by tools/parser_tables.py from ").removeprefix("Facts from ")


def table_opsets(version: str) -> tuple[int, int]:
    m = re.search(r"opsets (\d+)-(\d+)", table_source(version))
    if not m:
        raise ValueError(f"parser table {version} names no opset range")
    return int(m.group(1)), int(m.group(2))


@cache
def _named_targets() -> tuple[Target, ...]:
    return tuple(_named(name, doc) for name, doc in _data()["targets"].items())


def targets() -> list[Target]:
    """The named targets, in the data file's order."""
    return list(_named_targets())


def _named(name: str, doc: dict[str, Any]) -> Target:
    parser = parser_table_for(str(doc["tensorrt"]))
    return Target(
        name=name, description=doc["description"], tensorrt=str(doc["tensorrt"]), parser=parser,
        opsets=table_opsets(parser), gpu=doc["gpu"], precisions=frozenset(doc["precisions"]), dla=doc.get("dla"),
        dla_cores=int(doc.get("dla_cores", 0)), implicit_int8=bool(doc["implicit_int8"]),
        fp16_flag=bool(doc["fp16_flag"]), strongly_typed=bool(doc["strongly_typed"]), sources=dict(doc["sources"]),
    )


def get_target(spec: str) -> Target:
    """A named target, or facts for a box not listed: ``trt=8.6[,dla=orin][,cores=2][,int8=no][,fp16=no]``."""
    spec = spec.strip()
    named = {t.name: t for t in targets()}
    if spec in named:
        return named[spec]
    if "=" not in spec:
        raise UserError(f"unknown target {spec!r}: one of {', '.join(named)}, or facts such as trt=8.6,dla=orin")
    return from_facts(spec)


FACT_KEYS = ("trt", "dla", "cores", "int8", "fp16", "gpu")


def from_facts(spec: str) -> Target:
    """A target from ``key=value`` facts. What is not given follows from the TensorRT version:
    the parser table and opsets (``parser_table_for``); the implicit INT8 calibrator and the FP16
    builder flag up to 10.x (TensorRT 11 removed both); strongly typed networks from 10.0 (the
    first release here with the flag); FP16 and INT8 on the GPU unless said otherwise; a DLA
    has two cores unless ``cores`` says."""
    facts: dict[str, str] = {}
    for part in spec.split(","):
        key, _, value = part.partition("=")
        key, value = key.strip().lower(), value.strip().lower()
        if key not in FACT_KEYS or not value:
            raise UserError(f"target facts {spec!r}: {part!r} is not one of {', '.join(k + '=...' for k in FACT_KEYS)}")
        facts[key] = value
    trt = facts.get("trt")
    if not trt or not re.fullmatch(r"\d+(\.\d+){0,2}", trt):
        raise UserError(f"target facts {spec!r}: trt= takes a TensorRT version such as 8.6 or 10.3")
    dla = facts.get("dla", "none")
    if dla not in (*DLA_KINDS, "none"):
        raise UserError(f"target facts {spec!r}: dla is one of none, xavier, orin")
    yes = {"yes": True, "y": True, "1": True, "true": True, "no": False, "n": False, "0": False, "false": False}
    for key in ("int8", "fp16"):
        if key in facts and facts[key] not in yes:
            raise UserError(f"target facts {spec!r}: {key} is yes or no")
    cores = facts.get("cores", "2" if dla != "none" else "0")
    if not cores.isdigit() or (dla == "none") != (int(cores) == 0):
        raise UserError(f"target facts {spec!r}: cores is a count, 0 exactly when there is no DLA")
    v = version_tuple(trt)
    parser = parser_table_for(trt)
    precisions = frozenset(p for p in PRECISIONS if yes.get(facts.get(p, "yes"), True))
    return Target(
        name=spec, description="a box described by its facts", tensorrt=trt, parser=parser,
        opsets=table_opsets(parser), gpu=facts.get("gpu", "unknown"), precisions=precisions,
        dla=None if dla == "none" else dla, dla_cores=int(cores), implicit_int8=v < (11,), fp16_flag=v < (11,),
        strongly_typed=v >= (10,), listed=False,
    )


def check_precision(target: Target, precision: str) -> None:
    """A precision the target's GPU does not run fast is refused in one line (fp32 always runs)."""
    wanted = {"fp16": {"fp16"}, "int8": {"int8"}, "best": {"fp16", "int8"}}.get(precision, set())
    missing = sorted(wanted - target.precisions)
    if missing:
        raise UserError(f"{target.name}: its {target.gpu} GPU has no fast {' or '.join(m.upper() for m in missing)}; "
                        f"use --precision {'fp16' if 'fp16' in target.precisions else 'fp32'}")


def check_build(target: Target, precision: str, carried: str, dla_core: int | None, calib_cache: bool) -> None:
    """What ``build --target`` refuses before any TensorRT is asked: a precision the GPU lacks
    (asked for, or carried by a Q/DQ / FP16 ONNX), a DLA the box does not have or a core past its
    count, the DLA at FP32 (it runs FP16 and INT8 only), and the implicit INT8 calibrator's cache
    on a TensorRT without that calibrator."""
    check_precision(target, carried if carried != "fp32" else precision)
    if dla_core is not None:
        if target.dla is None:
            raise UserError(f"--dla-core: {target.name} has no DLA")
        if dla_core >= target.dla_cores:
            raise UserError(f"--dla-core {dla_core}: {target.name} has {target.dla_cores} DLA core(s), 0 to {target.dla_cores - 1}")
        if precision == "fp32" and carried == "fp32":
            raise UserError("--dla-core: the DLA runs FP16 and INT8 only; add --precision fp16 or int8")
    if calib_cache and not target.implicit_int8:
        raise UserError(f"--calib-cache: TensorRT {target.tensorrt} ({target.name}) has no implicit INT8 calibrator; "
                        "build the Q/DQ ONNX that calib writes")
