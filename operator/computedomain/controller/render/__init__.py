"""Pure renderers: typed inputs in, complete server-side-apply manifests out.

Nothing here performs I/O, reads the clock, or imports kopf or a Kubernetes client. Each renderer emits
values in the canonical form the API server stores, because the controller skips an apply when every
rendered field already has the same value on the live object.
"""
