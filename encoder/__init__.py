"""Pixels to codes: preprocessing, the autoencoder family, training and compiled encoding."""
