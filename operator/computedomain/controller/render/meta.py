"""Metadata pieces shared by several renderers."""

from __future__ import annotations

from typing import Any

from computedomain.api import names
from computedomain.api.models import ComputeDomain


def domain_labels(domain: ComputeDomain) -> dict[str, str]:
    """The label that ties an object to its domain; also the selector for everything of the domain."""
    return {names.DOMAIN_LABEL: domain.uid}


def owner_reference(domain: ComputeDomain) -> dict[str, Any]:
    """An owner reference that lets the garbage collector delete a same-namespace child with its domain.

    No blockOwnerDeletion: that would need update rights on the domain's finalizers subresource and
    gains nothing, since the domain's own finalizer already orders the teardown.
    """
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.DOMAIN_KIND,
        "name": domain.name,
        "uid": domain.uid,
        "controller": True,
    }
