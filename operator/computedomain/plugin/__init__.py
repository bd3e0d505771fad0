"""The DRA kubelet plugin of driver compute-domain.nvidia.com: IMEX channels and daemon claims on a node."""
