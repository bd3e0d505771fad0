"""Dynamic Resource Allocation: what the ComputeDomain driver shares with the `resource.k8s.io` API.

Pure functions only (no API calls): served-version choice and per-version shapes (`versions`,
`shapes`), what a node publishes (`slices`), the DeviceClasses (`deviceclasses`), and the decoding of
a ResourceClaim's allocation (`allocation`) and of our driver's opaque configs in it (`configs`).
The controller, the kubelet plugin and the test bed all build on it; it never imports any of them.
"""
