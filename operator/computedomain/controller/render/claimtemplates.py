"""The two ResourceClaimTemplates of a domain: the workload's channel and the IMEX daemon's device."""

from __future__ import annotations

from typing import Any

from computedomain.api import names
from computedomain.api.models import ComputeDomain, ComputeDomainChannelConfig, ComputeDomainDaemonConfig
from computedomain.controller.render.meta import domain_labels, owner_reference
from computedomain.controller.settings import Settings
from computedomain.dra.shapes import device_request, opaque_config
from computedomain.dra.versions import resource_api_version

KIND = "ResourceClaimTemplate"


def workload_claim_template(domain: ComputeDomain, api_version: str) -> dict[str, Any]:
    """The channel template named in the domain's spec, in the domain's namespace.

    Owned by the domain, so the garbage collector removes it with the domain. Every claim generated from
    it carries the domain label, which is what the controller watches claims by, and the domain's
    namespace and name (`claim_annotations`).
    """
    channel = domain.spec.channel
    config = ComputeDomainChannelConfig(domain_id=domain.uid, allocation_mode=channel.allocation_mode)
    return {
        "apiVersion": resource_api_version(api_version),
        "kind": KIND,
        "metadata": {
            "name": channel.resource_claim_template.name,
            "namespace": domain.namespace,
            "labels": {**domain_labels(domain), names.TARGET_LABEL: names.TARGET_WORKLOAD},
            "ownerReferences": [owner_reference(domain)],
        },
        "spec": {
            "metadata": {"labels": domain_labels(domain), "annotations": claim_annotations(domain)},
            "spec": _devices(
                names.CHANNEL_REQUEST, names.CHANNEL_DEVICE_CLASS, config.to_parameters(), api_version
            ),
        },
    }


def daemon_claim_template(domain: ComputeDomain, settings: Settings, api_version: str) -> dict[str, Any]:
    """The template of the IMEX daemon pods' claim, in the controller's namespace (next to the DaemonSet).

    Its claims name the domain's namespace and name (`claim_annotations`): nothing else about a claim
    in the controller's namespace tells where its domain is.
    """
    config = ComputeDomainDaemonConfig(domain_id=domain.uid)
    return {
        "apiVersion": resource_api_version(api_version),
        "kind": KIND,
        "metadata": {
            "name": names.daemon_name(domain.uid),
            "namespace": settings.namespace,
            "labels": {**domain_labels(domain), names.TARGET_LABEL: names.TARGET_DAEMON},
        },
        "spec": {
            "metadata": {"annotations": claim_annotations(domain)},
            "spec": _devices(
                names.DAEMON_REQUEST, names.DAEMON_DEVICE_CLASS, config.to_parameters(), api_version
            ),
        },
    }


def claim_annotations(domain: ComputeDomain) -> dict[str, str]:
    """The annotations every claim generated from the domain's templates carries: where the domain is."""
    return {
        names.DOMAIN_NAMESPACE_ANNOTATION: domain.namespace,
        names.DOMAIN_NAME_ANNOTATION: domain.name,
    }


def _devices(request: str, device_class: str, parameters: dict[str, Any], api_version: str) -> dict[str, Any]:
    return {
        "devices": {
            "requests": [device_request(request, device_class, api_version)],
            "config": [opaque_config(request, names.DRIVER, parameters)],
        },
    }
