"""`kubectl computedomain`: what a ComputeDomain is made of on each node, and why it is not Ready.

A fifth program beside the controller, the agent, the daemon and the kubelet plugin: it reads what
they write (the domain's status and Events, its DaemonSet, daemon pods, clique objects, claims, node
labels and the plugin's Events) and writes nothing. `gather` does the reading; `snapshot` holds what
was read, `explain` and `table` turn it into words without I/O.
"""
