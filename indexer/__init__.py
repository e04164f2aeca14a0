"""Folders in, a searchable collection out. Importing this package loads no TensorFlow or FAISS."""
