"""The encoder's inference runtimes side by side, on a collection's own model (issue 17).

    python benchmarks/runtimes.py --index demo-index [--candidates tensorflow xla onnx openvino] [--out DIR]
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/runtimes.py --index demo-index   # TensorFlow held to AVX2

Each candidate runs in a fresh process (thread pools and oneDNN's ISA are fixed per process) with 1 and with 2
intra-op threads, on the codes graph (what indexing runs) and the query graph (codes plus the decoder's error):
milliseconds for one image alone (what a lone query pays) and per image in a batch of 256 (what indexing and a
busy server pay), and the largest difference of its codes from the Keras graph's. Candidates: tensorflow (the Keras
graphs, oneDNN), xla (the same, jit-compiled), onnx (ONNX Runtime on the exported graphs: the default), openvino
(the exported graphs in OpenVINO, f32; skipped when it is not installed). ONNX Runtime and OpenVINO choose their
kernels by the CPU's own flags: ONEDNN_MAX_CPU_ISA restricts TensorFlow only.
Writes runtimes.json and runtimes.md to --out (default: print only).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CANDIDATES = ("tensorflow", "xla", "onnx", "openvino")


def measure(index: str, candidate: str, threads: int) -> dict:
    """One candidate at one thread count, in this process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from encoder import graphs, onnx_graphs
    from encoder.embed import Encoder

    keras_encoder = Encoder.load(index, runtime="tensorflow")
    model = keras_encoder.model
    pixels = np.random.default_rng(0).integers(0, 256, (256, model.image_size, model.image_size, model.channels),
                                               dtype=np.uint8)
    reference = keras_encoder.encode(pixels)
    if candidate in ("tensorflow", "xla"):
        spec = [graphs.pixel_spec(model.image_size, model.channels)]
        codes_fn = tf.function(lambda p: graphs.codes_graph(model, p), input_signature=spec,
                               jit_compile=candidate == "xla")
        def codes_and_errors(p):
            out = graphs.codes_graph(model, p)
            return out["codes"], graphs.errors_graph(model, p, out["latents"])["errors"]

        both = tf.function(codes_and_errors, input_signature=spec, jit_compile=candidate == "xla")

        def codes(x):
            return codes_fn(x)["codes"].numpy()

        def query(x):
            return tuple(t.numpy() for t in both(x))
    else:
        blobs = onnx_graphs.export(model)
        if candidate == "onnx":
            runtime = onnx_graphs.OnnxGraphs(blobs, threads)

            def codes(x):
                return runtime.codes(x)[0]

            def query(x):
                c, z = runtime.codes(x)
                return c, runtime.errors(x, z)
        else:
            import openvino as ov

            core = ov.Core()
            config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                      "INFERENCE_PRECISION_HINT": "f32"}  # its default on AVX-512 BF16/AMX CPUs is bf16
            compiled = {name: core.compile_model(core.read_model(blob), "CPU", config)
                        for name, blob in blobs.items()}

            def codes(x):
                return compiled["codes"]({"pixels": x})["codes"]

            def query(x):
                out = compiled["codes"]({"pixels": x})
                return out["codes"], compiled["errors"]({"pixels": x, "latents": out["latents"]})["errors"]

    def timed(fn, x, repeat: int) -> float:
        fn(x)
        fn(x)
        walls = []
        for _ in range(repeat):
            started = time.perf_counter()
            fn(x)
            walls.append((time.perf_counter() - started) * 1000)
        return float(np.median(walls))

    return {"candidate": candidate, "threads": threads,
            "codes_one_ms": round(timed(codes, pixels[:1], 200), 4),
            "codes_batch_ms": round(timed(codes, pixels, 10) / len(pixels), 4),
            "query_one_ms": round(timed(query, pixels[:1], 200), 4),
            "query_batch_ms": round(timed(query, pixels, 10) / len(pixels), 4),
            "max_code_difference": float(np.abs(codes(pixels) - reference).max())}


def markdown(rows: list[dict], header: str) -> str:
    """The README's table."""
    lines = [header, "", "| Runtime | Threads | Codes: 1 image ms | Codes: per image in 256 ms | Query: 1 image ms "
             "| Query: per image in 256 ms | Codes vs Keras |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['candidate']} | {r['threads']} | {r['codes_one_ms']:.3f} | {r['codes_batch_ms']:.3f} | "
                     f"{r['query_one_ms']:.3f} | {r['query_batch_ms']:.3f} | {r['max_code_difference']:.1e} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", required=True, help="a collection made by `indexer build`")
    parser.add_argument("--candidates", nargs="+", choices=CANDIDATES, default=list(CANDIDATES))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, help="write runtimes.json and runtimes.md here")
    parser.add_argument("--one", nargs=2, metavar=("CANDIDATE", "THREADS"), help=argparse.SUPPRESS)  # a child run
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.index, args.one[0], int(args.one[1]))))
        return 0
    from encoder.runtime import cpu_features

    rows = []
    for candidate in args.candidates:
        if candidate == "openvino":
            try:
                import openvino  # noqa: F401
            except ImportError:
                print("openvino: not installed, skipped", file=sys.stderr)
                continue
        for threads in args.threads:
            proc = subprocess.run([sys.executable, __file__, "--index", args.index, "--one", candidate, str(threads)],
                                  capture_output=True, text=True, cwd=REPO)
            if proc.returncode:
                raise RuntimeError(f"{candidate} with {threads} threads failed: {proc.stderr[-2000:]}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    header = (f"{os.cpu_count()} cores ({', '.join(cpu_features()) or 'no AVX2'}"
              f"{f'; oneDNN held to {isa}' if isa else ''}); run of {time.strftime('%Y-%m-%d')}")
    text = markdown(rows, header)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "runtimes.json").write_text(json.dumps({"header": header, "rows": rows}, indent=2) + "\n")
        (args.out / "runtimes.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
