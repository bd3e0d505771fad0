"""The IMEX daemon wrapper that each pod of a ComputeDomain's DaemonSet runs (`compute-domain-daemon`)."""
