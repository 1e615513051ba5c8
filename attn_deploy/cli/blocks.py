"""``blocks``: what a block file registers, each block checked alone before a checkpoint needs it."""

from __future__ import annotations

import click

from attn_deploy.cli.group import main
from attn_deploy.cli.options import console, emit_json, gate, json_option


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False), metavar="FILE.py...")
@click.option("--opset", type=click.IntRange(13, 20), default=17, show_default=True, help="ONNX opset of the check export.")
@json_option
def blocks(files: tuple[str, ...], opset: int, as_json: bool) -> None:
    """List the blocks FILE.py registers and check each alone: output shape at two sizes, ONNX
    export with dynamic H and W, TensorRT lint, ONNX Runtime against PyTorch (exit 1 if any fails).

    A block file is your own Python: it is imported and runs. In it, register each nn.Module
    class with @block(NAME, ..., rule=RULE) from attn_deploy.blocks: NAME as your yaml and
    your checkpoint's pickle write it (MobileNet_Block, models.common.MobileNet_Block); RULE
    how a yaml row's arguments become the constructor's: conv, csp, attention, keep, plain,
    concat, or a function (channels, args, width). Then pass --blocks FILE.py to export,
    parity, info or ship. A checkpoint's pickle never runs: its objects of these classes are
    rebuilt with your class and filled from the tensors.
    """
    from attn_deploy.exporter.blockcheck import check_block
    from attn_deploy.models.loader import load_blocks
    from attn_deploy.report import blocks_check_table

    results = [check_block(entry, opset) for entry in load_blocks(files)]
    if as_json:
        emit_json([r.to_dict() for r in results])
    else:
        console(120).print(blocks_check_table(results))
    failed = [f"{r.block}: {r.problem or r.lint[0]}" for r in results if not r.passed]
    gate(not failed, f"{len(failed)} of {len(results)} block(s) failed their check", failed)
