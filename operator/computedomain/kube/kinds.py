"""Where each kind the programs touch lives in the REST API."""

from __future__ import annotations

from dataclasses import dataclass

from computedomain.api import names


@dataclass(frozen=True)
class Kind:
    """Where a kind lives in the REST API."""

    group: str
    version: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        """`group/version`, or `version` for the core group."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The REST path of the collection, or of one object (and one of its subresources)."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base


DOMAINS = Kind(names.GROUP, names.VERSION, names.DOMAIN_PLURAL, True)
CLIQUES = Kind(names.GROUP, names.VERSION, names.CLIQUE_PLURAL, True)
DAEMONSETS = Kind("apps", "v1", "daemonsets", True)
PODS = Kind("", "v1", "pods", True)
NODES = Kind("", "v1", "nodes", False)
EVENTS = Kind("", "v1", "events", True)
LEASES = Kind("coordination.k8s.io", "v1", "leases", True)


def claim_templates(version: str) -> Kind:
    """ResourceClaimTemplates in the served `resource.k8s.io` version."""
    return Kind("resource.k8s.io", version, "resourceclaimtemplates", True)


def claims(version: str) -> Kind:
    """ResourceClaims in the served `resource.k8s.io` version."""
    return Kind("resource.k8s.io", version, "resourceclaims", True)


def resource_slices(version: str) -> Kind:
    """ResourceSlices (cluster-scoped) in the served `resource.k8s.io` version."""
    return Kind("resource.k8s.io", version, "resourceslices", False)


def device_classes(version: str) -> Kind:
    """DeviceClasses (cluster-scoped) in the served `resource.k8s.io` version."""
    return Kind("resource.k8s.io", version, "deviceclasses", False)
