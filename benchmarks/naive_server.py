"""The naive baseline speed.py measures lookalike against: similarity search served the way simple demos do it.

    python benchmarks/naive_server.py --index INDEX_DIR --port N [--threads 8]

Keras `predict()` on every request, a numpy brute-force scan over every code, Pillow resizing without draft mode,
the same model, the same codes and the same waitress server as lookalike. It exists only to be timed.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def naive_pixels(data: bytes, size: int, channels: int):
    """Decode and resize the plain way: full-size decode, then a resize; (1, S, S, C) float32 in [0, 1]."""
    import numpy as np
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("L" if channels == 1 else "RGB").resize((size, size))
    return (np.asarray(image, np.float32) / 255.0).reshape(1, size, size, channels)


def create_app(index_dir: Path):
    """A Flask app with the naive search route."""
    import keras
    import numpy as np
    from flask import Flask, jsonify, request

    import encoder.model  # noqa: F401  (registers our layers for loading)
    from encoder.store import read_info
    from indexer.catalog import Catalog

    info = read_info(index_dir)
    model = keras.saving.load_model(index_dir / "encoder.keras", compile=False)
    with Catalog(index_dir, readonly=True) as catalog:
        ids, codes = catalog.all_codes(int(info["code_size"]))
        paths = catalog.relpaths()
    app = Flask(__name__)

    @app.post("/api/search")
    def search():
        data = request.files["image"].read() if request.files else request.get_data()
        x = naive_pixels(data, int(info["image_size"]), int(info["channels"]))
        latent = model.encoder.predict(x, verbose=0)[:, : model.code_size]  # (1, d): one predict() per request
        code = np.asarray(model.search_code(latent))[0]  # the same code space as the index
        distances = np.linalg.norm(codes - code, axis=1)  # (n,) brute force over every code
        order = np.argsort(distances)[: int(request.args.get("k", 10))]
        return jsonify({"results": [{"id": int(ids[i]), "path": paths[i], "distance": float(distances[i])}
                                    for i in order]})

    @app.get("/api/health")
    def health():
        return jsonify({"status": "ok", "images": len(ids)})

    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    import waitress

    waitress.serve(create_app(args.index), host="127.0.0.1", port=args.port, threads=args.threads,
                   _quiet=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
