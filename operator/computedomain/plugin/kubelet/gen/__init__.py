"""Generated gRPC stubs of the kubelet plugin protos (`make protos`); do not edit."""
