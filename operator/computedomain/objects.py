"""What every program asks of a Kubernetes object body, without I/O: its key, whether a pod is Ready,
whether a live object holds a rendered one, and whether a name is one the API server accepts.

Objects travel as plain JSON dicts (`Object`): the programs render complete manifests and compare them
with what the API server returns, so typed models would only add conversion cost.
"""

from __future__ import annotations

import re
from typing import Any, TypeAlias

# A Kubernetes object (or any JSON object) as the API server sends it and the programs render it.
Object: TypeAlias = dict[str, Any]

# One DNS label (RFC 1123) without its length limit; `[.]` keeps the pattern usable as a CEL literal,
# which the CRD's validation rules need free of escapes.
_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_LABEL = f"^{_LABEL}$"
DNS_SUBDOMAIN = f"^{_LABEL}([.]{_LABEL})*$"
DNS_LABEL_MAX = 63
DNS_SUBDOMAIN_MAX = 253
_DNS_LABEL = re.compile(DNS_LABEL)
_DNS_SUBDOMAIN = re.compile(DNS_SUBDOMAIN)


def is_dns_label(value: str) -> bool:
    """Whether `value` is a DNS label as Kubernetes checks one (RFC 1123): at most 63 lower case
    letters, digits and '-', starting and ending with a letter or digit (namespaces, Service names)."""
    return len(value) <= DNS_LABEL_MAX and _DNS_LABEL.fullmatch(value) is not None


def is_dns_subdomain(value: str) -> bool:
    """Whether `value` is a DNS subdomain as Kubernetes checks one (RFC 1123): at most 253 characters,
    DNS labels joined by '.' (most object names, node names included).

    As in the API server, a label of a subdomain is not held to 63 characters.
    """
    return len(value) <= DNS_SUBDOMAIN_MAX and _DNS_SUBDOMAIN.fullmatch(value) is not None


def object_key(obj: Object) -> str:
    """`namespace/name`, or `name` for cluster-scoped objects."""
    meta = obj["metadata"]
    namespace = meta.get("namespace")
    return f"{namespace}/{meta['name']}" if namespace else str(meta["name"])


def pod_ready(pod: Object) -> bool:
    """Whether the pod's `Ready` condition is True (a pod being deleted may still be Ready)."""
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def contains(live: Any, desired: Any) -> bool:
    """True when every field of `desired` is present in `live` with the same value.

    Fields the API server adds (defaults, status, metadata it owns) are ignored; lists must match
    element by element, since the order of containers, env vars and tolerations is meaningful. An
    empty rendered list or map matches an absent field: the API server drops empty ones (a domain's
    `status.nodes` once every node left), and applying them again would change nothing.
    """
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return False
        return all(
            contains(live[key], value) if key in live else _empty_collection(value)
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return False
        return all(contains(a, b) for a, b in zip(live, desired, strict=True))
    return bool(live == desired)


def _empty_collection(value: Any) -> bool:
    return isinstance(value, (dict, list)) and not value
