"""Does distillation from the float model, or more data, help quantization-aware fine-tuning?

Not a test: an experiment, kept so its figures in the precision guide can be made again. The
demo is quantized as ``qat`` quantizes it (Model Optimizer INT8, 64 calibration images) and
fine-tuned with our trainer's pieces (YOLOv5's loss, SGD with momentum, the cosine, BatchNorm
frozen), with or without a distillation term: MSE between the quantized model's and the float
model's sigmoid outputs per cell (objectness everywhere; box and class weighted by the float
model's objectness). After each epoch the Q/DQ export is scored as ``calib`` scores a graph
(ONNX Runtime, the val split, against the float32 export; damage in mAP50-95 points +- its
jackknife error).

    python -m attn_deploy.train.shapes /tmp/full                      # 3000 train + 300 val
    attn-deploy export --weights demo/yolov5n-ca-shapes.pt --imgsz 320 -o /tmp/demo.onnx
    OMP_WAIT_POLICY=PASSIVE python benchmarks/qat_distill.py MODE WEIGHT EPOCHS TRAIN_IMAGES [LR] [WEIGHTS] [ONNX] [DATA]

MODE: ``task`` (the loss alone), ``both`` (loss + WEIGHT x distillation) or ``kd`` (distillation
alone). Measured (precision guide): task 1.86, both x1 1.84, both x2000 2.15 on 512 images for
3 epochs; task on all 3000 images for 2 epochs 2.17.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from attn_deploy.calib.evaluate import Evaluator, calibration_images
from attn_deploy.exporter import ExportSpec
from attn_deploy.exporter.torch2onnx import torch_to_onnx
from attn_deploy.models import load_model
from attn_deploy.models.quantized import fused, quantize_model
from attn_deploy.train.trainer import Recipe, _set_lr, load_split, make_batch, make_loss, make_optimizer

IMGSZ, BATCH = 320, 16


def distillation(out: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Per detection level (B, anchors, H, W, 5 + nc): objectness everywhere, box and class
    weighted by the teacher's objectness, in sigmoid space."""
    total = torch.zeros(())
    for o, t in zip(out, teacher):
        s, tt = o.sigmoid(), t.sigmoid()
        w = tt[..., 4:5]
        total = total + ((s[..., 4] - tt[..., 4]) ** 2).mean()
        total = total + (w * (s[..., :4] - tt[..., :4]) ** 2).sum(-1).mean()
        total = total + (w * (s[..., 5:] - tt[..., 5:]) ** 2).sum(-1).mean()
    return total


def train_mode(model: nn.Module) -> None:
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def main(argv: list[str]) -> None:
    mode, weight, epochs, count = argv[0], float(argv[1]), int(argv[2]), int(argv[3])
    lr = float(argv[4]) if len(argv) > 4 else 1e-3
    weights = argv[5] if len(argv) > 5 else "demo/yolov5n-ca-shapes.pt"
    reference = argv[6] if len(argv) > 6 else "/tmp/demo.onnx"
    data = Path(argv[7] if len(argv) > 7 else "/tmp/full/data.yaml")
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = load_model(weights=weights)
    ev = Evaluator(data, (IMGSZ, IMGSZ), 1, None)
    ref = ev.set_reference(reference)
    student = quantize_model(net, calibration_images(data, (IMGSZ, IMGSZ), 64)[0])
    teacher = fused(net)

    def score() -> str:
        student.eval()
        s = ev.score(torch_to_onnx(student, ExportSpec((IMGSZ, IMGSZ), 1)))
        return f"{s.damage(ref):.3f}+-{s.damage_error(ref):.2f}"

    print("start", score(), flush=True)
    images, labels = load_split(data, "train", IMGSZ)
    images, labels = images[:count], labels[:count]
    recipe = Recipe(imgsz=IMGSZ, epochs=epochs, batch=BATCH, lr=lr, final_lr=0.05, warmup_iters=10, ema_decay=0.0,
                    freeze_norm=True, optimizer="sgd")
    loss_fn, _ = make_loss(student, IMGSZ)
    opt = make_optimizer(student, recipe)
    rng = np.random.default_rng(0)
    per = len(images) // BATCH
    step, start = 0, time.time()
    train_mode(teacher)
    for p in teacher.parameters():
        p.requires_grad_(False)
    for epoch in range(epochs):
        train_mode(student)
        sums = [0.0, 0.0]
        order = rng.permutation(len(images))
        for k in range(per):
            _set_lr(opt, recipe, step, per * epochs)
            x, targets = make_batch(images, labels, order[k * BATCH:(k + 1) * BATCH], rng, 0.5)
            out = student(x)
            task = loss_fn(out, targets)[0] if mode != "kd" else torch.zeros(())
            kd = torch.zeros(())
            if mode != "task":
                with torch.no_grad():
                    target = teacher(x)
                kd = distillation(out, target)
            loss = task + weight * kd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(student.parameters(), 10.0)
            opt.step()
            step += 1
            sums[0] += task.item()
            sums[1] += kd.item()
        print(f"epoch {epoch + 1} task {sums[0] / per:.4f} kd {sums[1] / per:.5f} {time.time() - start:.0f}s "
              f"damage {score()}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
