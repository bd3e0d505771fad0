"""Prometheus metrics of the kubelet plugin framework (the driver's own are in `plugin.metrics`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

SLICE_PUBLISHES = Counter(
    "computedomain_plugin_slice_publishes_total", "Times this node's ResourceSlice was (re)published."
)
REGISTERED = Gauge("computedomain_plugin_registered", "1 once the kubelet confirmed the registration.")
