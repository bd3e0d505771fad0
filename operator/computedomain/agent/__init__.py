"""The node agent: finds this node's NVLink clique through NVML and keeps the Node's clique label true.

Runs on every GPU node; reports only facts about its own node and never imports the controller.
"""
