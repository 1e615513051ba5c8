"""What each key of our JSON documents means: the sidecars and every verb's ``--json``.

The one place these words live. ``tools/json_schemas.py`` runs the verbs, infers each
document's JSON Schema from what they wrote (types, required keys) and takes the descriptions
from here; it stops when a document has a key this module does not describe, or describes a
key no run wrote, so the reference page cannot drift from the code. Plain data: nothing is
imported.

A field is its description, or a ``Nested`` one whose object (or list of objects) has stable
keys of its own, described too. Objects keyed by data (op names, output names, stages) are
not nested: their description says what the keys are.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Nested:
    """A key whose object, or each object of whose list, has keys described in ``fields``."""

    description: str
    fields: dict[str, str | Nested]


Fields = dict[str, "str | Nested"]


@dataclass(frozen=True)
class Document:
    """One kind of document: a title for the reference page, who writes and reads it, its keys
    (for a document that is a list: the keys of each of its objects)."""

    title: str
    about: str
    fields: Fields


HEAD: Fields = {
    "family": "the family the head belongs to",
    "kind": "anchor-based or anchor-free",
    "reg_max": "box bins per side (DFL); 1 for direct distances, 0 for an anchor-based head",
    "end2end": "whether the head has YOLO26's one-to-one (NMS-free) branches",
    "layout": "how output0 is laid out: xywh_obj_cls, xywh_cls or end2end",
    "max_det": "detections per image when the output is the end-to-end top-k, else null",
}
TENSOR: Fields = {
    "name": "the tensor's name",
    "dtype": "its element type, as numpy names it (float32, int64, ...)",
    "shape": "its shape; a dynamic axis is a name (batch, height, ...)",
}
LAYER: Fields = {
    "index": "the yaml row",
    "module": "the row's module (Conv, C3, CoordAtt, Detect, ...)",
    "attention": "whether the module is an attention block",
    "sources": "the rows it reads (the yaml's 'from', -1 resolved)",
    "output": "the ONNX tensor that holds its output",
    "inputs": "the ONNX tensors it reads, in 'from' order",
}
LINT_SUMMARY: Fields = {
    "passed": "whether TensorRT's ONNX parser should take every node",
    "tensorrt": "the TensorRT version whose parser table lint used",
    "findings": "how many nodes the parser would refuse",
}
TENSOR_PARITY: Fields = {
    "passed": "whether every output part is within its tolerance",
    "cases": "the input shapes checked, [N, C, H, W] each",
    "outputs": "per output part (output0.boxes, output0.scores, ...): errors, tolerances, PyTorch's noise, verdict",
    "checks": "further named checks (the NMS tail's), each passed or not",
    "noise": "PyTorch's own float32 noise (float32 against float64) that the tolerances scale with, or null",
}
EXPORT_SIDECAR: Fields = {
    "attn_deploy": "the attn-deploy version that wrote the file",
    "model": "the model's name: a built-in name, or the checkpoint's or yaml's",
    "source": "where the model came from: the model, cfg and weights given, and the block files (--blocks) its own layers came from",
    "names": "the class names, in class order",
    "nc": "the number of classes",
    "imgsz": "the input size the graph was exported at, [H, W]",
    "batch": "the graph's batch size (with dynamic axes: the example batch)",
    "strides": "the detection strides in pixels, one per output level",
    "family": "the model family: yolov5, yolov8, yolo11, yolo12 or yolo26",
    "head": Nested("the detection head, as calib, parity and serve decode its output", HEAD),
    "anchors": "an anchor-based head's anchors in pixels, per level a list of (w, h); null for an anchor-free one",
    "opset": "the ONNX opset of the graph",
    "dynamic": "whether batch, height and width are dynamic (--dynamic)",
    "dynamic_axes": "per input and output name, its dynamic axes (index: name); empty when static",
    "inputs": Nested("each graph input", TENSOR),
    "outputs": Nested("each graph output", TENSOR),
    "output_layout": "how to read the outputs: xywh_obj_cls, xywh_cls, nms or end2end",
    "nms": Nested("with --nms, the NMS tail's settings; else null", {
        "topk": "detections kept per image (--topk)",
        "iou_thres": "IoU above which a box is suppressed (--iou-thres)",
        "conf_thres": "the lowest score kept (--conf-thres)",
    }),
    "onnx": Nested("the ONNX file", {
        "file": "its file name",
        "sha256": "the SHA-256 of its bytes",
        "bytes": "its size in bytes",
        "nodes": "its node count",
        "ops": "node count per op type, most frequent first",
    }),
    "lint": Nested("the TensorRT lint of the graph; null with --no-check", LINT_SUMMARY),
    "parity": Nested("ONNX Runtime against PyTorch on the graph's outputs; null with --no-check or for a quantized model",
                     TENSOR_PARITY),
    "layers": Nested("each yaml row and the ONNX tensors at its boundary (calib and parity --per-block read them)", LAYER),
    "readings": "choices the checkpoint left open (CBAM's plane order, SE's gate): what was taken, from which evidence",
    "target": "with --target: the box's facts (as targets --json lists them), the rewrites applied and, "
              "with a DLA, where each layer would run (dla_placement)",
}
SCORE: Fields = {
    "map50": "mAP at IoU 0.5 on the validation images; null without labels",
    "map50_95": "mAP at IoU 0.5 to 0.95; null without labels",
    "agreement": "the share of float32's detections the graph finds again (IoU 0.9)",
}
CALIB: Fields = {
    "passed": "within the budget, lint clean and, for INT8, enough of the MACs in INT8",
    "output": "the graph written: FILE.int8.onnx or FILE.fp16.onnx (or -o)",
    "precision": "int8 or fp16",
    "method": "INT8 activation ranges: max, entropy, mse, percentile or best (qat for a fine-tuned graph); null for FP16",
    "calibration": Nested("the calibration images", {
        "source": "where they came from: a folder, or a data.yaml and its split",
        "images": "how many were used",
        "images_requested": "how many were asked for (--images)",
    }),
    "val": "the validation images: a folder, or a data.yaml (its val split)",
    "val_images": "validation images scored",
    "val_images_requested": "validation images found (up to the cap), unreadable ones included",
    "budget": "the budget: mAP50-95 points, or disagreement in percent without labels (--max-map-drop)",
    "damage": "how much worse than float32, in the budget's unit (negative: better)",
    "reference": Nested("float32's scores, the reference", SCORE),
    "final": Nested("the written graph's scores", SCORE),
    "naive": Nested("INT8: the scores with every layer in INT8, before any was kept out; null for FP16", SCORE),
    "excluded_groups": "the layers (or --exclude patterns) kept out of INT8",
    "sensitivity": "the measured search (an option of the library): each group's damage kept out and alone in INT8",
    "sensitivity_other_layers": "the measured search, when its groups are not enough: the other layers, ranked on a subset",
    "decision": "the search (--exclude auto): the layers kept, the damage, whether within budget, every trial; else null",
    "lint_passed": "whether the written graph passes TensorRT lint",
    "chart": "the sensitivity chart written beside the graph (FILE.sensitivity.png), or null",
    "cache": "the TensorRT calibration cache written (--cache), or null",
    "search": "the search that chose the layers kept out (ranked or measured), or null where none ran",
    "search_images": "the validation images each trial was scored on, or null",
    "trials": "graphs scored besides the float32 reference and the naive graph",
    "ranking": "the ranked search's order: each layer's local INT8 error, from per-block parity of the naive graph",
    "stages": "seconds per stage, in the order they ran, and the total",
    "coverage": Nested("INT8: where the multiply-accumulates run; null for FP16", {
        "int8_share": "the share of the MACs in INT8",
        "macs": "the float graph's MACs (convolutions and matrix products)",
        "int8_macs": "the MACs that run in INT8",
        "float_macs": "the MACs that stay in float",
        "float_layers": "per layer kept in float (name): its share of the MACs",
    }),
    "min_int8": "INT8: the share of the MACs that must run in INT8 (--min-int8); 0 for FP16",
    "entropy_layers": "--method best: the layers on entropy's scales (the others on max's); else null",
    "checkpoint": "qat: the checkpoint of the fine-tuned quantized model; else null",
    "qat_selection": "qat with more than one epoch: each epoch's damage on the train images held out of the fine-tune, and the epoch kept; else null",
}
PRECISION_SIDECAR: Fields = {
    **EXPORT_SIDECAR,
    "nms": "null: calib takes a graph without the NMS tail",
    "onnx": Nested("the precision graph's file", {
        "file": "its file name",
        "sha256": "the SHA-256 of its bytes",
        "bytes": "its size in bytes",
        "from": "the float32 ONNX it was made from",
    }),
    "lint": Nested("the float32 graph's lint, copied from its sidecar (this graph's: precision.lint_passed)", LINT_SUMMARY),
    "parity": Nested("the float32 graph's export check, copied from its sidecar", TENSOR_PARITY),
    "layers": Nested("each yaml row, its boundary tensors found again in this graph (without them where unclear)", LAYER),
    "precision": Nested("calib's result, as calib --json prints it", CALIB),
}
PROFILE: Fields = {
    "input": "the dynamic input's name",
    "min": "the smallest shape, [N, C, H, W]",
    "opt": "the shape TensorRT tunes for",
    "max": "the largest shape",
}
ENGINE_SIDECAR: Fields = {
    "tensorrt": "the TensorRT version that built the engine (the engine runs only under it)",
    "gpu": Nested("the GPU it was built on (the engine runs only on its architecture); null where none was found", {
        "name": "the GPU's name",
        "compute_capability": "its compute capability, e.g. 8.9",
    }),
    "precision": "the precision asked for (--precision): fp32, fp16, int8 or best",
    "onnx_precision": "the precision the ONNX states itself: fp32, fp16 or int8 (Q/DQ)",
    "plan": Nested("how the builder was configured", {
        "strongly_typed": "built strongly typed: the types the ONNX states",
        "fp16": "TensorRT's FP16 flag",
        "int8": "TensorRT's INT8 flag",
        "note": "why, in words",
    }),
    "profiles": Nested("the optimisation profile of a dynamic input; empty for a static one", PROFILE),
    "onnx": Nested("the ONNX it was built from", {"file": "its file name", "sha256": "the SHA-256 of its bytes"}),
    "export": "the ONNX's own sidecar, copied (parity, serve and bench read the head and sizes here)",
    "dla": Nested("with --dla-core: the DLA core and GPU fallback; else null", {
        "core": "the DLA core (--dla-core)",
        "gpu_fallback": "whether layers the DLA cannot run go to the GPU (--gpu-fallback)",
    }),
    "target": "with --target: the box's facts and, with --dla-core, where each layer runs (dla_placement); else null",
    "calib_cache": Nested("implicit INT8 from --calib-cache: the cache used; else null", {
        "path": "its absolute path",
        "sha256": "the SHA-256 of its bytes",
    }),
    "build_seconds": "how long the build took, in seconds",
}
STEP: Fields = {
    "name": "the step: verify, export, calib, build, parity or report",
    "status": "pass, fail, skipped or not run",
    "why": "why, in words (a failure's figures, a skip's reason)",
    "artefacts": "the files it wrote, by name, in the output folder",
    "seconds": "how long it took",
}
SHIP: Fields = {
    "attn_deploy": "the attn-deploy version that ran",
    "passed": "whether every gate passed",
    "model": "the model's name",
    "precision": "the precision shipped: int8, fp16 or fp32",
    "output": "the output folder",
    "candidate": "the file parity judged: the engine, or the checked ONNX where there is no TensorRT",
    "deployable": "the candidate once every gate passed; null when one failed",
    "tensorrt": "the TensorRT version that built the engine; null where none is installed",
    "failed": "the step that stopped the run, or null",
    "exit_code": "the command's exit code: 0, 1 (a gate failed) or 2 (bad input met on the way)",
    "steps": Nested("each step, in order", STEP),
    "artefacts": "every file the run wrote, by name",
    "options": "the options of the run, as given (imgsz as [H, W], target as its facts)",
}
GATES: Fields = {
    "min_agreement": "the least detection agreement (--min-agreement)",
    "max_map_drop": "the largest mAP50-95 drop in points (--max-map-drop), checked with labels",
    "iou": "the IoU at which two detections agree (--agreement-iou; 0.9 for FP32/FP16, 0.5 for INT8 by default)",
}
ERRORS: Fields = {
    "mean": "the mean over matched pairs",
    "p50": "the median",
    "p99": "the 99th percentile",
    "max": "the largest",
}
PARITY: Fields = {
    "passed": "whether both gates passed",
    "failures": "each failed gate, in words",
    "candidate": "the file judged",
    "data": "the images: a folder, an image or a data.yaml and its split; random images without --data",
    "imgsz": "the input size, [H, W]",
    "images": "images compared",
    "images_requested": "images asked for (--data's images, up to --max-images)",
    "images_skipped": "images left out (unreadable, --on-error skip)",
    "skipped": "each image left out and why",
    "gates": Nested("the gates", GATES),
    "tensor": "per output part (output0.boxes, ...): the raw outputs' errors against PyTorch",
    "detections": Nested("detections after NMS, matched at the gates' IoU", {
        "agreement": "matched over matched, missed and extra; null when neither side detected anything",
        "matched": "detections found on both sides",
        "missed": "PyTorch's detections the candidate lacks",
        "extra": "the candidate's detections PyTorch lacks",
        "iou_thres": "the IoU at which two detections match",
        "box_error_px": Nested("matched pairs' largest corner difference, in pixels", ERRORS),
        "score_error": Nested("matched pairs' score difference", ERRORS),
    }),
    "map50": "with labels: mAP at IoU 0.5 of the reference (PyTorch) and of the candidate",
    "map50_95": "with labels: mAP at IoU 0.5 to 0.95 of the reference and of the candidate",
    "map_drop": "with labels: reference minus candidate mAP50-95, in points",
    "blocks": "with --per-block: each yaml layer's accumulated and local error against PyTorch",
    "culprit": "with --per-block: the layer whose local error is worst and over the tolerance, or null",
    "block_tolerance": "with --per-block: the local relative error above which a layer is the culprit",
    "block_images": "with --per-block: images the layers were compared on",
}
LINT: Fields = {
    "path": "the graph checked",
    "passed": "whether TensorRT's ONNX parser should take every node",
    "target": "the target whose parser table was used, or null for the default",
    "tensorrt": "the TensorRT version of that parser table",
    "source": "where the parser table comes from (onnx-tensorrt's support matrix, its release)",
    "opset": "the graph's ONNX opset",
    "nodes": "its node count",
    "ops": "node count per op type",
    "findings": "each node the parser would refuse: node, op, reason, fix and yaml layer",
}
LATENCY: Fields = {
    "min": "the fastest",
    "mean": "the mean",
    "median": "the median",
    "p90": "the 90th percentile",
    "p95": "the 95th percentile",
    "p99": "the 99th percentile",
    "max": "the slowest",
}
BENCH: Fields = {
    "target": "what was timed: a model name, an ONNX file or an engine",
    "backend": "torch, ort or trt",
    "precision": "the precision it ran in",
    "batch": "images per batch",
    "imgsz": "the input size, [H, W]",
    "device": "the device, in words",
    "iterations": "batches timed",
    "throughput": "images per second",
    "latency_ms": Nested("each batch's latency, in milliseconds", LATENCY),
    "h2d_ms": Nested("on a GPU: the copy to the device, per batch, in milliseconds", LATENCY),
    "compute_ms": Nested("on a GPU: the compute alone, per batch, in milliseconds", LATENCY),
    "d2h_ms": Nested("on a GPU: the copy back, per batch, in milliseconds", LATENCY),
}
STATS: Fields = {
    "max_abs": "the largest absolute difference",
    "rel": "max_abs over the largest absolute reference value",
    "cosine": "the cosine similarity of the two",
}
TARGET: Fields = {
    "name": "the target's name (--target NAME)",
    "tensorrt": "its TensorRT version",
    "parser_table": "the TensorRT parser table that stands for it",
    "opsets": "the ONNX opsets its parser takes, [lowest, highest]",
    "gpu": "its GPU architecture",
    "precisions": "the precisions its GPU runs fast",
    "dla": "its DLA generation (xavier, orin), or null",
    "dla_cores": "its DLA cores",
    "implicit_int8": "whether its TensorRT has the implicit INT8 calibrator (calib --cache, build --calib-cache)",
    "fp16_flag": "whether its TensorRT has the FP16 builder flag",
    "strongly_typed": "whether its TensorRT builds strongly typed networks",
    "listed": "whether it is a named target (not one given by its facts)",
    "description": "the box, in words",
    "sources": "for each fact, the document it comes from",
}

DOCUMENTS: dict[str, Document] = {
    "export-sidecar": Document(
        "The export sidecar, FILE.json",
        "Written beside FILE.onnx by export (and by ship). calib, build, parity, serve and bench read it: "
        "the classes, the size, the head, the layer boundaries.",
        EXPORT_SIDECAR),
    "precision-sidecar": Document(
        "The precision sidecar, FILE.int8.json and FILE.fp16.json",
        "Written beside the graph calib (or qat) makes: the float32 graph's sidecar, its layers found again, "
        "the new file, and precision.",
        PRECISION_SIDECAR),
    "engine-sidecar": Document(
        "The engine sidecar, FILE.engine.json",
        "Written beside FILE.engine by build (and by ship where TensorRT is). parity and bench refuse an engine "
        "whose TensorRT or GPU architecture is not this machine's.",
        ENGINE_SIDECAR),
    "ship": Document(
        "ship.json, and ship --json",
        "ship's summary of the run, in its output folder; ship --json prints the same document. "
        "ship --force reads artefacts to remove a previous run's files.",
        SHIP),
    "ship-report": Document(
        "ship's report.json",
        "The data of ship's report.html, beside it.",
        {"ship": "the run's summary, as ship.json holds it",
         "calib": "calib's result, as calib --json prints it; null for fp32",
         "parity": "parity's result, as parity --json prints it"}),
    "models": Document("models --json", "The built-in models and attention modules.", {
        "models": "every built-in model name",
        "families": "per family (yolov5, yolov8, yolo11, yolo12, yolo26): its model names",
        "attention": "the attention modules' registry keys",
    }),
    "info": Document("info --json", "A model's size and layers at an input size.", {
        "name": "the model's name",
        "imgsz": "the input size, [H, W]",
        "params": "parameters",
        "gflops": "GFLOPs at imgsz (convolutions and matrix products, 2 FLOPs per multiply-add)",
        "layers": Nested("each yaml row", {
            "index": "the row",
            "source": "the row(s) it reads (the yaml's 'from')",
            "number": "the yaml's repeat count",
            "module": "its module",
            "args": "its arguments, as built",
            "params": "its parameters",
            "gflops": "its GFLOPs",
            "shape": "its output's shape at imgsz",
        }),
        "family": "the model family",
        "head": Nested("the detection head", {**HEAD, "description": "the head and its output, in words"}),
    }),
    "targets": Document("targets --json", "The named deployment targets and their facts.", {
        "targets": Nested("each target", TARGET),
    }),
    "export": Document("export --json", "What export wrote and checked.", {
        "model": "the model's name",
        "onnx": "the ONNX file written",
        "sidecar": "its sidecar",
        "passed": "whether lint and the parity check passed (or were skipped)",
        "imgsz": "the input size, [H, W]",
        "batch": "the batch size",
        "dynamic": "whether batch, height and width are dynamic",
        "opset": "the ONNX opset",
        "head": Nested("the detection head", HEAD),
        "nms": "with --nms, the NMS tail's settings (topk, iou_thres, conf_thres); else null",
        "nodes": "the graph's node count",
        "ops": "node count per op type, most frequent first",
        "bytes": "the file's size in bytes",
        "sha256": "the SHA-256 of the file",
        "seconds": "how long the export took",
        "lint": Nested("the TensorRT lint, as lint --json prints it; null with --no-check", LINT),
        "parity": Nested("ONNX Runtime against PyTorch; null with --no-check or for a quantized model", TENSOR_PARITY),
        "target": "with --target: the box's facts, the rewrites applied and, with a DLA, the placement",
    }),
    "lint": Document("lint --json", "The TensorRT parser check of one graph.", LINT),
    "lint-targets": Document("lint --target ... --json", "The parser check for each target named.", {
        "path": "the graph checked",
        "targets": Nested("each target", {
            "target": "the target's facts, as targets --json lists them",
            "passed": "whether its parser should take every node",
            "source": "where its parser table comes from",
            "opset": "the graph's ONNX opset",
            "findings": "each node its parser would refuse, with its yaml layer and module",
            "dla": "with a DLA: where each layer would run; else null",
        }),
    }),
    "blocks": Document("blocks --json", "A list: each block a block file registers, checked alone.", {
        "block": "the block's name",
        "origin": "the file that registered it",
        "names": "the names it answers to (yaml and pickle)",
        "rule": "how a yaml row's arguments become its constructor's",
        "shapes": "its output shape at the sizes tried",
        "ops": "node count per op type of its ONNX export",
        "lint": "what TensorRT's parser would refuse",
        "max_error": "ONNX Runtime against PyTorch, the largest absolute difference; null where not run",
        "problem": "why it failed, or null",
        "passed": "whether it passed every check",
    }),
    "parity": Document("parity --json", "The ship/no-ship gate of a candidate against PyTorch "
                       "(--report writes the same document to report.json).", PARITY),
    "verify": Document("verify --json", "Our rebuild of a checkpoint against the fork's own code, layer by layer.", {
        "passed": "whether every layer and the output agree within the tolerances",
        "failures": "each disagreement, in words",
        "weights": "the checkpoint",
        "fork": "the fork's folder",
        "images": "images compared",
        "imgsz": "the input size, [H, W]",
        "tolerances": Nested("the tolerances", {
            "layer_rel": "a layer's relative error",
            "boxes_px": "the boxes, in pixels",
            "scores": "the scores",
        }),
        "boxes": Nested("the output boxes, ours against the fork's", STATS),
        "scores": Nested("the output scores, ours against the fork's", STATS),
        "first_difference": "the first layer over the tolerance, or null",
        "compared": "layers compared (the same shape on both sides)",
        "layers": Nested("each yaml layer", {
            "layer": "the yaml row",
            "module": "our module",
            "fork_class": "the fork's class",
            "shape": "the output shape, or null where not compared",
            "error": Nested("where compared: ours against the fork's", STATS),
            "compared": "false where not compared (else absent)",
        }),
        "readings": Nested("choices the checkpoint left open", {
            "what": "the choice",
            "taken": "what was taken",
            "evidence": "what in the checkpoint said so; null for a guess",
            "certain": "whether there was evidence",
        }),
    }),
    "calib": Document("calib --json and qat --json",
                      "calib's result; the precision sidecar holds the same under precision. qat prints the same "
                      "document (its checkpoint set).", CALIB),
    "build": Document("build --json", "The engine's path and its sidecar's keys.", {
        "engine": "the engine written", **ENGINE_SIDECAR}),
    "bench": Document("bench --json", "One target's timing (bench --triton adds concurrency).", BENCH),
    "bench-compare": Document("bench --compare --json", "Several targets timed interleaved; also written to "
                              "OUTPUT.json.", {"results": Nested("each target, in the order given", BENCH)}),
    "serve": Document("serve --json", "The Triton model repository written.", {
        "repository": "the repository folder",
        "models": "the models written (NAME, and NAME_e2e with --ensemble)",
        "max_batch": "their max_batch_size",
        "platform": "the Triton platform or backend (onnxruntime_onnx, tensorrt_plan, python)",
    }),
}


def descriptions(fields: Fields, prefix: str = "") -> dict[str, str]:
    """Every key of ``fields`` with its description, nested ones as ``head.kind``."""
    out = {}
    for key, field in fields.items():
        out[prefix + key] = field.description if isinstance(field, Nested) else field
        if isinstance(field, Nested):
            out.update(descriptions(field.fields, f"{prefix}{key}."))
    return out
