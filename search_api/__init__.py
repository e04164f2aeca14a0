"""The service around a collection: app factory, engine, JSON API, web page and a light Python client."""

__version__ = "0.8.0"  # the one version of both distributions: pyproject.toml files read it from here
