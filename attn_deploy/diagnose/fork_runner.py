"""Run a user's fork on images, for ``attn-deploy verify --fork DIR``.

This is the one place where attn-deploy runs a fork's code and a checkpoint's pickle, and
only when the user asks: it is started as a separate process (``python fork_runner.py``,
the fork's own interpreter where ``--python`` names one) with the fork's folder first on
``sys.path``, loads the checkpoint with ``torch.load`` as the fork's scripts do, runs the
model on the images it is given and saves the model's output and each yaml layer's output.
It needs torch and numpy only (never attn_deploy), and writes nothing but its output files.

    python fork_runner.py FORK_DIR WEIGHTS IMAGES.npy OUT.npz
"""

import json
import sys


def pick_model(ckpt):
    """The EMA weights when the checkpoint has them, as the forks' own loaders prefer."""
    if isinstance(ckpt, dict):
        for key in ("ema", "model"):
            if ckpt.get(key) is not None:
                return ckpt[key]
        raise SystemExit("the checkpoint holds no 'ema' or 'model' object")
    return ckpt


def main(fork, weights, images, out):
    sys.path.insert(0, fork)
    import numpy as np
    import torch

    model = pick_model(torch.load(weights, map_location="cpu", weights_only=False)).float().eval()
    layers = list(getattr(model, "model", []))
    seen = {}
    for i, layer in enumerate(layers):
        layer.register_forward_hook(lambda module, args, output, i=i: seen.__setitem__(i, output))
    with torch.no_grad():
        y = model(torch.from_numpy(np.load(images)))
    final = y[0] if isinstance(y, (tuple, list)) else y
    arrays = {"final": final.numpy()}
    arrays.update({f"layer{i}": o.numpy() for i, o in seen.items() if isinstance(o, torch.Tensor)})
    np.savez(out, **arrays)
    with open(out + ".json", "w") as f:
        json.dump({"classes": [type(m).__name__ for m in layers]}, f)


if __name__ == "__main__":
    main(*sys.argv[1:5])
