"""The inference runtimes (issue 17): ONNX Runtime serves and indexes with the Keras model's own numbers, its graphs
are exported at training and hash-checked like the model, and TensorFlow takes over when it must."""
from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from encoder import onnx_graphs, store
from encoder.embed import Encoder
from encoder.model import build_autoencoder
from encoder.options import TrainConfig
from encoder.train import train
from encoder.variants import VARIANTS
from tests.support import make_image

TOLERANCE = 1e-5  # float32 round-off between two runtimes' kernels: measured ~1e-6


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    """48 distinct 16x16 RGB images as (48, 16, 16, 3) uint8."""
    return np.stack([np.asarray(make_image(s, 16)) for s in range(48)])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, pixels):
    index_dir = tmp_path_factory.mktemp("model")
    info = train(pixels, TrainConfig(image_size=16, channels=3, code_size=8, epochs=2, batch_size=16), index_dir)
    return index_dir, info


def test_training_exports_both_graphs_with_their_hashes(trained):
    index_dir, info = trained
    assert set(info["onnx"]) == {"codes", "errors"}
    for name, sha in info["onnx"].items():
        assert store.file_sha256(index_dir / onnx_graphs.GRAPH_FILES[name]) == sha
    assert json.loads((index_dir / store.INFO_FILE).read_text())["onnx"] == info["onnx"]


def test_serving_and_indexing_codes_equal_the_keras_graphs(trained, pixels):
    index_dir, _ = trained
    onnx, keras = Encoder.load(index_dir), Encoder.load(index_dir, runtime="tensorflow")
    assert (onnx.runtime, keras.runtime) == ("onnx", "tensorflow")
    indexed = onnx.encode(pixels)  # what `indexer build` stores
    served = np.stack([onnx.encode_for_query(pixels[i : i + 1])[0][0] for i in range(len(pixels))])  # one a query
    batched = onnx.encode_for_query(pixels)  # the server's micro-batches
    reference = keras.encode_for_query(pixels)
    np.testing.assert_allclose(served, indexed, atol=TOLERANCE)
    for got, want in zip(batched, reference):  # codes, errors, latents
        np.testing.assert_allclose(got, want, atol=TOLERANCE)
    np.testing.assert_allclose(indexed, reference[0], atol=TOLERANCE)
    assert np.abs(indexed).max() > 0.1 and reference[1].min() > 0  # real codes and errors, not zeros


def test_a_changed_graph_file_is_refused(trained, tmp_path):
    index_dir, _ = trained
    for name in (store.MODEL_FILE, store.INFO_FILE, *onnx_graphs.GRAPH_FILES.values()):
        shutil.copy2(index_dir / name, tmp_path / name)
    graph = tmp_path / onnx_graphs.GRAPH_FILES["codes"]
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(store.ModelError, match="does not match the sha256"):
        Encoder.load(tmp_path)
    assert Encoder.load(tmp_path, runtime="tensorflow").runtime == "tensorflow"  # not read at all then


def test_a_model_saved_without_graphs_is_converted_when_loaded(trained, tmp_path, pixels, caplog):
    index_dir, info = trained
    shutil.copy2(index_dir / store.MODEL_FILE, tmp_path / store.MODEL_FILE)
    (tmp_path / store.INFO_FILE).write_text(json.dumps({k: v for k, v in info.items() if k != "onnx"}))
    with caplog.at_level(logging.INFO, logger="encoder.onnx_graphs"):
        encoder = Encoder.load(tmp_path)
    assert encoder.runtime == "onnx" and "converted the encoder to ONNX in memory" in caplog.text
    np.testing.assert_allclose(encoder.encode(pixels), Encoder.load(index_dir).encode(pixels), atol=TOLERANCE)


def test_a_graph_with_other_numbers_falls_back_to_tensorflow(trained, tmp_path, pixels, monkeypatch, caplog):
    index_dir, info = trained
    shutil.copy2(index_dir / store.MODEL_FILE, tmp_path / store.MODEL_FILE)
    (tmp_path / store.INFO_FILE).write_text(json.dumps({k: v for k, v in info.items() if k != "onnx"}))
    real_codes = onnx_graphs.OnnxGraphs.codes
    monkeypatch.setattr(onnx_graphs.OnnxGraphs, "codes", lambda self, p: tuple(a + 0.01 for a in real_codes(self, p)))
    with caplog.at_level(logging.WARNING, logger="encoder.onnx_graphs"):
        encoder = Encoder.load(tmp_path)
    assert encoder.runtime == "tensorflow" and "differ from Keras" in caplog.text
    keras = Encoder.load(index_dir, runtime="tensorflow")
    np.testing.assert_allclose(encoder.encode(pixels), keras.encode(pixels), atol=TOLERANCE)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("pooling", ["flatten", "attention"])
def test_every_variant_converts_with_the_same_numbers(variant, pooling):
    if variant == "dense" and pooling != "flatten":
        pytest.skip("the dense variant has no pooling")
    model = build_autoencoder(image_size=16, channels=3, code_size=6, variant=variant, pooling=pooling)
    onnx_graphs.check(model, onnx_graphs.OnnxGraphs(onnx_graphs.export(model), threads=1))  # raises if they differ


def test_a_failing_runtime_at_training_saves_the_model_without_graphs(trained, pixels, tmp_path, monkeypatch,
                                                                      caplog):
    """ONNX Runtime refusing the exported graphs costs the speed, never the trained model; stale graphs go."""
    index_dir, _ = trained
    store.copy_model(index_dir, tmp_path)  # a collection that already holds graphs from an earlier training

    def refuse(self, blobs, threads):
        raise RuntimeError("no kernel for this op")

    monkeypatch.setattr(onnx_graphs.OnnxGraphs, "__init__", refuse)
    with caplog.at_level(logging.WARNING):
        info = train(pixels, TrainConfig(image_size=16, channels=3, code_size=8, epochs=1, batch_size=16), tmp_path)
    assert "onnx" not in info and "cannot run the graphs" in caplog.text
    assert not any((tmp_path / name).exists() for name in onnx_graphs.GRAPH_FILES.values())
    encoder = Encoder.load(tmp_path)  # the runtime still refuses: TensorFlow encodes, with a warning
    assert encoder.runtime == "tensorflow" and encoder.encode(pixels[:3]).shape == (3, 8)


def test_a_sidecar_recording_part_of_the_graphs_is_refused(trained, tmp_path):
    index_dir, info = trained
    store.copy_model(index_dir, tmp_path)
    (tmp_path / store.INFO_FILE).write_text(json.dumps(info | {"onnx": {"codes": info["onnx"]["codes"]}}))
    with pytest.raises(store.ModelError, match="records graphs"):
        Encoder.load(tmp_path)


def test_an_unknown_runtime_is_refused(trained):
    with pytest.raises(ValueError, match="expected one of onnx, tensorflow"):
        Encoder.load(trained[0], runtime="openvino")


def test_the_server_and_a_ray_actor_take_the_chosen_runtime(tiny_collection):
    """A server configured for TensorFlow serves from it, with the same hits; a Ray actor takes the driver's runtime."""
    from encoder.runtime import configure_runtime
    from indexer.ray_engine import Encoding
    from search_api.app import create_app

    query = tiny_collection.images[7].read_bytes()
    answers = {}
    try:
        for runtime in ("tensorflow", "onnx"):
            app = create_app({"INDEX_DIR": str(tiny_collection.index_dir), "FOLLOW_SECONDS": 0, "RUNTIME": runtime})
            engine = app.extensions["lookalike.engine"]
            assert engine.collection.encoder.runtime == runtime
            body = app.test_client().post("/api/search?k=5", data=query).get_json()
            answers[runtime] = ([h["id"] for h in body["results"]], body["query"]["reconstruction_error"])
            assert app.test_client().get("/api/info").get_json()["runtime"] == runtime
            engine.close()
            actor = Encoding(str(tiny_collection.index_dir), 1.0, threads=1, runtime=runtime)
            assert actor.encoder.runtime == runtime
    finally:
        configure_runtime("onnx")  # the process-wide default, for the tests that follow in this process
    assert answers["tensorflow"][0] == answers["onnx"][0]
    assert answers["tensorflow"][1] == pytest.approx(answers["onnx"][1], rel=1e-4)
