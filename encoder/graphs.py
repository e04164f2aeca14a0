"""The autoencoder's inference graphs, defined once: TensorFlow runs them, `encoder.onnx_graphs` exports them.

Two graphs instead of one: indexing needs only the codes, a query also the reconstruction error, and a runtime
cannot skip the decoder inside one graph (ONNX Runtime computes every node of a session, whatever is asked for).
"""
from __future__ import annotations

from typing import Any


def pixel_spec(image_size: int, channels: int) -> Any:
    """The uint8 image batch every graph takes: (B, S, S, C)."""
    import tensorflow as tf

    return tf.TensorSpec([None, image_size, image_size, channels], tf.uint8, name="pixels")


def latent_spec(code_size: int) -> Any:
    """The raw latents the error graph rebuilds from: (B, code_size) float32."""
    import tensorflow as tf

    return tf.TensorSpec([None, code_size], tf.float32, name="latents")


def unit(pixels):
    """uint8 (B, S, S, C) -> float32 in [0, 1]."""
    import tensorflow as tf

    return tf.cast(pixels, tf.float32) / 255.0


def codes_graph(model, pixels) -> dict[str, Any]:
    """uint8 (B, S, S, C) -> search codes (B, d) and the raw latents (B, d) the decoder and the novelty test use."""
    z = model.latent(unit(pixels))  # (B, d)
    return {"codes": model.search_code(z), "latents": z}


def errors_graph(model, pixels, latents) -> dict[str, Any]:
    """uint8 (B, S, S, C) and their latents (B, d) -> mean squared reconstruction error per pixel (B,)."""
    import tensorflow as tf

    recon = model.decode(latents)  # (B, S, S, C) in [0, 1]
    return {"errors": tf.reduce_mean(tf.square(recon - unit(pixels)), axis=[1, 2, 3])}


def reconstruct_graph(model, pixels):
    """uint8 (B, S, S, C) -> what the model makes of them, uint8, same shape."""
    import tensorflow as tf

    recon = model.decode(model.latent(unit(pixels)))
    return tf.cast(tf.round(recon * 255.0), tf.uint8)


def signatures(model) -> dict[str, list[Any]]:
    """name -> the input signature of each graph above, for any batch size."""
    pixels = pixel_spec(model.image_size, model.channels)
    return {"codes": [pixels], "errors": [pixels, latent_spec(model.code_size)], "reconstruct": [pixels]}


def tensorflow_graphs(model) -> dict[str, Any]:
    """name -> tf.function of the graphs above, traced once for any batch size."""
    import tensorflow as tf

    spec = signatures(model)
    return {"codes": tf.function(lambda p: codes_graph(model, p), input_signature=spec["codes"]),
            "errors": tf.function(lambda p, z: errors_graph(model, p, z), input_signature=spec["errors"]),
            "reconstruct": tf.function(lambda p: reconstruct_graph(model, p), input_signature=spec["reconstruct"])}
