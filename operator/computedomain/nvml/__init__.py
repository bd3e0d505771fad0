"""NVML readings shared by the node agent and the kubelet plugin: the GPUs and their NVLink fabric
state (`gpus`), reading them through pynvml (`reading`) and the clique they form (`clique`).

Imports no program: both node-side programs use it, and neither may import the other.
"""
