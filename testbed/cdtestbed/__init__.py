"""A real local Kubernetes control plane for tests and demos.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and KWOK (which plays the kubelet for
fake nodes) run as local processes built from pinned Go modules (see `tools/`). Nothing here is a
mock: the API server, scheduler and controllers are the upstream ones.
"""
