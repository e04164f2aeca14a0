"""The service around a collection: app factory, engine, JSON API, web page and a light Python client."""
