"""Detections from a served model: images to an ``attn-deploy serve --ensemble`` endpoint.

    python examples/triton_client.py localhost:8000 yolov5n-ca_e2e bus.jpg zidane.jpg [--grpc]

Prints, per image, one line per detection: class, score and the box in the image's own
pixels. Needs only ``tritonclient[http,grpc]`` and attn-deploy (for ``connect``/``detect``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from attn_deploy.serve.client import connect, detect


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url", help="host:port of the server (8000 HTTP, 8001 gRPC by default)")
    ap.add_argument("model", help="the ensemble, NAME_e2e")
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--grpc", action="store_true")
    args = ap.parse_args()
    protocol = "grpc" if args.grpc else "http"
    client = connect(args.url, protocol)
    for path in args.images:
        rows = detect(client, args.model, path.read_bytes(), protocol)
        print(f"{path}: {len(rows)} detection(s)")
        for x1, y1, x2, y2, score, cls in rows:
            print(f"  class {int(cls):3d}  {score:.3f}  [{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}]")


if __name__ == "__main__":
    main()
