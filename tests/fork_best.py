"""A YOLOv5 fork's ``best.pt`` carrying trained weights, made by the stand-in fork's own code
(``tests/forks/yolov5``): the fork's ``DetectionModel`` is built from the yaml of one of our
checkpoints (our zoo keys spelled as the fork spells them: ``ca`` is its ``CoordAtt``), takes
that checkpoint's tensors by order and shape (its outputs are then checked equal to ours), and
is saved as the fork's train.py saves it: ``torch.save`` of the training dict, with dill when
a block comes from a plugin the fork loaded by path (``models/extra``), as those forks do.

    python tests/fork_best.py OUT.pt --weights demo/yolov5n-ca-shapes.pt
    python tests/fork_best.py OUT.pt --weights demo/yolov5n-fasternet-shapes.pt --blocks examples/blocks/fasternet.py

The documentation's start pages run these (a user's fork checkpoint to a checked INT8 graph).
Test-only: dill is a dev dependency; the package never writes such files.
"""

from __future__ import annotations

import argparse
import copy
import warnings
from pathlib import Path

import torch
import yolov5_standin as y5

FORK_SPELLING = {"ca": "CoordAtt"}  # our zoo key -> the class name the fork's yaml writes


def fork_yaml(ours: dict) -> dict:
    doc = copy.deepcopy({k: v for k, v in ours.items() if k in ("nc", "depth_multiple", "width_multiple", "anchors",
                                                                 "backbone", "head")})
    for row in doc["backbone"] + doc["head"]:
        row[2] = FORK_SPELLING.get(row[2], row[2])
    return doc


def fork_model(weights: Path, blocks: list[Path]) -> torch.nn.Module:
    """The fork's model with our checkpoint's tensors; its output checked against ours."""
    from attn_deploy.models import load_model

    ours = load_model(weights=weights, blocks=blocks).eval()
    with y5.installed():
        fork = y5.DetectionModel(fork_yaml(ours.yaml))
    theirs = fork.state_dict()
    mine = [t for k, t in ours.state_dict().items() if not k.endswith("num_batches_tracked")]
    keys = [k for k in theirs if not k.endswith("num_batches_tracked")]
    if [tuple(theirs[k].shape) for k in keys] != [tuple(t.shape) for t in mine]:
        raise SystemExit(f"{weights}: the fork builds another layout from this yaml")
    fork.load_state_dict({**theirs, **dict(zip(keys, mine))})
    fork.names = list(ours.names)
    fork.eval()
    x = torch.rand(2, 3, 320, 320, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), y5.installed():
        diff = (fork(x)[0] - ours(x)).abs().max().item()
    if diff > 1e-3:
        raise SystemExit(f"{weights}: the fork's model and ours differ by {diff:.3g}")
    return fork


def save(path: Path, net: torch.nn.Module) -> Path:
    plugin = any(type(m).__module__.startswith("models.extra") for m in net.modules())
    with y5.installed(), warnings.catch_warnings():  # models.common and models.yolo importable, as in train.py
        warnings.simplefilter("ignore")
        if plugin:
            import dill

            torch.save(y5.training_checkpoint(net), path, pickle_module=dill)
        else:
            torch.save(y5.training_checkpoint(net), path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python tests/fork_best.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--weights", type=Path, required=True, help="our checkpoint whose yaml and tensors to take")
    parser.add_argument("--blocks", type=Path, action="append", default=[], help="a block file the yaml needs")
    args = parser.parse_args(argv)
    net = fork_model(args.weights, args.blocks)
    print(f"{save(args.out, net)}: the fork's DetectionModel ({sum(p.numel() for p in net.parameters()):,} parameters), "
          "saved as its train.py saves it")


if __name__ == "__main__":
    main()
