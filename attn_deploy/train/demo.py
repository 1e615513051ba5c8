"""Train the demo model: ``python -m attn_deploy.train.demo DATA.yaml OUT.pt``.

Builds a zoo model (``yolov5n-ca`` by default; anchor-free names such as ``yolo11n-ca`` too)
for the dataset's classes, trains it with the recipe (the loss follows the model's head),
evaluates its EMA weights on the val split after they are written in half precision and read
back (the figures belong to the file, not to the training process), and saves recipe, data
generator settings, the per-epoch val mAP and the measured figures inside the checkpoint.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, fields
from pathlib import Path

import click
import torch

from attn_deploy.data import load_data
from attn_deploy.models import load_model
from attn_deploy.models.checkpoint import write_checkpoint
from attn_deploy.models.zoo import create_model
from attn_deploy.train.trainer import Recipe, evaluate, train


def run(data: Path, out: Path, model_name: str, recipe: Recipe) -> dict[str, float]:
    names = load_data(data, "val").names or []
    net = create_model(model_name, nc=len(names))
    net.names = list(names)
    start = time.perf_counter()
    curve: list[list[float]] = []

    def progress(epoch: int, ema: object) -> str:
        """The EMA's val mAP after every epoch, to watch; the figure that counts is measured on the file."""
        r = evaluate(ema.ema, data, recipe.imgsz)  # type: ignore[attr-defined]
        curve.append([epoch, round(r.map50, 4), round(r.map50_95, 4)])
        return f"val mAP50 {r.map50:.3f} mAP50-95 {r.map50_95:.3f}"

    ema = train(net, data, recipe, after_epoch=progress, log_every=50)
    minutes = (time.perf_counter() - start) / 60
    ema.ema.names = net.names
    generator = load_yaml_generator(data)
    extra = {"arch": model_name, "recipe": asdict(recipe), "data": generator, "curve": curve,
             "trained": {"minutes": round(minutes, 1), "cpu": platform.processor() or platform.machine(),
                         "threads": recipe.threads, "torch": str(torch.__version__)}}
    write_checkpoint(out, ema.ema, extra)
    result = evaluate(load_model(weights=out), data, recipe.imgsz)
    figures = {"map50": round(result.map50, 4), "map50_95": round(result.map50_95, 4), "minutes": round(minutes, 1)}
    write_checkpoint(out, load_model(weights=out), {**extra, "val": figures})
    return figures


def load_yaml_generator(data: Path) -> dict[str, object]:
    import yaml

    doc = yaml.safe_load(Path(data).read_text())
    return doc.get("generator", {}) if isinstance(doc, dict) else {}


@click.command()
@click.argument("data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", "model_name", default="yolov5n-ca", show_default=True)
@click.option("--epochs", type=int, default=Recipe.epochs, show_default=True)
@click.option("--batch", type=int, default=Recipe.batch, show_default=True)
@click.option("--imgsz", type=int, default=Recipe.imgsz, show_default=True)
def main(data: Path, out: Path, model_name: str, epochs: int, batch: int, imgsz: int) -> None:
    defaults = {f.name: getattr(Recipe, f.name) for f in fields(Recipe)}
    recipe = Recipe(**{**defaults, "epochs": epochs, "batch": batch, "imgsz": imgsz})
    figures = run(data, out, model_name, recipe)
    click.echo(f"{out}: mAP50 {figures['map50']:.4f}  mAP50-95 {figures['map50_95']:.4f}  "
               f"trained in {figures['minutes']} min")


if __name__ == "__main__":
    main()
