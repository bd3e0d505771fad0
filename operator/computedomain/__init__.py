"""ComputeDomain operator: multi-node NVLink (IMEX) domains for Kubernetes workloads."""

__version__ = "0.1.0"
