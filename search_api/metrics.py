"""GET /metrics in the Prometheus text format: requests by route and status, latency histograms, collection size."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from flask import Blueprint, Flask, Response, current_app, g, request

if TYPE_CHECKING:
    from search_api.engine import Engine

bp = Blueprint("metrics", __name__)

# Bucket edges in seconds: a search is ~2-20 ms here, a thumbnail of a large photo can take ~100 ms.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The app's own registry (not the process-global one: several apps may live in one process, as in tests)."""

    def __init__(self, engine: Engine):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("lookalike_http_requests", "HTTP requests answered, by route, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("lookalike_http_request_duration_seconds",
                                 "Time from request to response, by route", ["route"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.registry.register(ServedCollector(engine))

    def watch_queue(self, depth: Callable[[], int]) -> None:
        """Export the HTTP server's count of requests waiting for a thread, read at each scrape."""
        from prometheus_client import Gauge

        Gauge("lookalike_http_queued_requests", "Requests received and waiting for a free server thread",
              registry=self.registry).set_function(depth)


def _route() -> str:
    # The URL rule, not the path: /api/images/<raw_id>/thumbnail stays one series however many ids are asked.
    return request.url_rule.rule if request.url_rule is not None else "unmatched"


class ServedCollector:
    """What the engine serves, read at each scrape: it changes with HTTP writes and when a build's generation is
    switched to."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def collect(self) -> Iterator:
        """The collection's size, the generation served, the switches so far and the model."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        served = self.engine.served  # one generation for every figure of this scrape
        yield GaugeMetricFamily("lookalike_collection_images", "Images in the collection being served",
                                value=len(served.collection))
        yield GaugeMetricFamily("lookalike_collection_generation",
                                "Catalogue generation of the saved vectors being served", value=served.generation)
        yield CounterMetricFamily("lookalike_collection_switches", "Switches to a generation a build published, "
                                  "without a restart", value=self.engine.switches)
        encoder = served.collection.encoder
        yield InfoMetricFamily("lookalike_model", "The encoder serving queries",
                               value={"variant": str(encoder.info["variant"]), "model": encoder.model_id})


def register(app: Flask, engine: Engine) -> None:
    """Count and time every request of `app`, and serve the figures at /metrics."""
    metrics = Metrics(engine)
    app.extensions["lookalike.metrics"] = metrics

    @app.before_request
    def start_clock() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def observe(response: Response) -> Response:
        started = g.pop("metrics_started", None)
        route = _route()
        metrics.requests.labels(route, request.method, str(response.status_code)).inc()
        if started is not None:
            metrics.latency.labels(route).observe(time.perf_counter() - started)
        return response

    app.register_blueprint(bp)


@bp.get("/metrics")
def metrics_page() -> Response:
    """The registry in the Prometheus text exposition format."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(current_app.extensions["lookalike.metrics"].registry),
                    content_type=CONTENT_TYPE_LATEST)
