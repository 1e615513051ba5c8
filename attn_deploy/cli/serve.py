"""``serve``: a Triton Inference Server model repository for an ONNX file or an engine."""

from __future__ import annotations

from typing import Any

import click

from attn_deploy.cli.group import main
from attn_deploy.cli.options import ImageSize, emit_json, json_option, target_option


@main.command()
@click.argument("model_file", type=click.Path(dir_okay=False), metavar="FILE.onnx|FILE.engine")
@click.option("--repository", required=True, type=click.Path(file_okay=False), help="The model repository folder (made if missing).")
@click.option("--name", help="Model name (default: the sidecar's model name).")
@click.option("--max-batch", type=int, help="max_batch_size (default: 8, or less where the graph or the engine's profile takes less).")
@click.option("--instances", type=int, default=1, show_default=True, help="Instances of each model (instance_group count).")
@click.option("--max-queue-delay-us", type=int, default=100, show_default=True, help="Dynamic batching: how long a request may wait for others.")
@click.option("--ensemble", is_flag=True, help="Also NAME_e2e: encoded image in, detections in original pixels out (letterbox and NMS as parity does them).")
@click.option("--raw-input", is_flag=True, help="With --ensemble: take raw HxWx3 uint8 BGR images instead of encoded ones.")
@click.option("--imgsz", type=ImageSize(), help="With --ensemble and a graph of dynamic H, W: the letterbox size (default: the export's).")
@click.option("--backend", type=click.Choice(["native", "python"]), default="native", show_default=True,
              help="native: onnxruntime_onnx / tensorrt_plan. python: the ONNX in ONNX Runtime inside the python backend (servers without the onnxruntime backend).")
@click.option("--python-env", type=click.Path(file_okay=False), help="EXECUTION_ENV_PATH for the python-backend models (a venv with numpy, opencv, onnxruntime and attn-deploy).")
@target_option
@json_option
def serve(model_file: str, repository: str, name: str | None, max_batch: int | None, instances: int, max_queue_delay_us: int,
          ensemble: bool, raw_input: bool, imgsz: tuple[int, int] | None, backend: str, python_env: str | None,
          target: Any, as_json: bool) -> None:
    """Write a Triton model repository for FILE: config.pbtxt (built as Triton's ModelConfig
    message, parsed back and checked against the graph) and the model file."""
    from attn_deploy.serve.repository import ServeOptions, write_repository

    opts = ServeOptions(repository, name, max_batch, instances, max_queue_delay_us, ensemble, raw_input, backend,
                        python_env, imgsz, target)
    result = write_repository(model_file, opts)
    if as_json:
        emit_json(result.to_dict())
        return
    click.echo(f"{result.repository}/ ({result.platform}, max_batch_size {result.max_batch})")
    for model in sorted(result.models):
        click.echo(f"  {model}/config.pbtxt")
