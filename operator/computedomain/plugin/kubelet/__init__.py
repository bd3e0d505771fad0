"""A kubelet DRA plugin framework: the kubelet's gRPC protos and stubs (`protos/`, `gen/`), the
registration, DRA v1 and v1beta1 and resource health servers (`servers`), the health stream
(`health`), ResourceSlice publishing (`slices`) and the `Driver` protocol they serve (`driver`).

It knows nothing of ComputeDomains: a driver prepares and unprepares claims and names its devices,
the framework speaks the kubelet's versions of the API. A new kubelet gRPC version touches only here.
"""
