"""How the in-memory API server (`support.fakekube`) changes objects: merge and JSON patches, what a
server-side apply owns and removes, label selectors."""

from __future__ import annotations

import copy
from typing import Any

from computedomain.kube import KubeError, Object


def fields_of(config: Any) -> dict[str, Any]:
    """The `FieldsV1` set an apply of `config` owns (maps by key; lists as atomic values)."""
    if not isinstance(config, dict):
        return {}
    owned: dict[str, Any] = {}
    for key, value in config.items():
        if key in ("apiVersion", "kind"):
            continue
        owned[f"f:{key}"] = fields_of(value) if isinstance(value, dict) else {}
    return owned


def without_applied(live: Any, owned: dict[str, Any], config: Any) -> None:
    """Remove from `live` (in place) what `owned` lists and `config` no longer sets."""
    if not isinstance(live, dict):
        return
    for key, sub in owned.items():
        name = key.removeprefix("f:")
        if not isinstance(config, dict) or name not in config:
            live.pop(name, None)
        elif sub and isinstance(live.get(name), dict):
            without_applied(live[name], sub, config[name])


def merge(live: Any, patch: Any) -> Any:
    """RFC 7386 merge patch (also how an apply's maps combine with the live object here)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(live) if isinstance(live, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


def conflicts(live: Any, config: Any, owned: dict[str, Any] | None) -> bool:
    """Whether a non-forced apply would change a value that our apply does not own."""
    if isinstance(config, dict) and isinstance(live, dict):
        for key, value in config.items():
            if key in live and conflicts(live[key], value, (owned or {}).get(f"f:{key}")):
                return True
        return False
    return owned is None and live != config


def _pointer(path: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]


def json_patch(obj: Object, operations: list[Object]) -> Object:
    result = copy.deepcopy(obj)
    for op in operations:
        *parents, last = _pointer(op["path"])
        target: Any = result
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target.get(part)
            if target is None:
                raise invalid(f"path {op['path']} does not exist")
        kind = op["op"]
        if kind == "test":
            current = target[int(last)] if isinstance(target, list) else target.get(last, KeyError)
            # A test of null passes on an absent member, as the API server has it.
            if current != op["value"] and not (current is KeyError and op["value"] is None):
                raise invalid(f"testing value {op['path']} failed")
        elif kind == "remove":
            if isinstance(target, list):
                del target[int(last)]
            elif last in target:
                del target[last]
            else:
                raise invalid(f"unable to remove nonexistent key {last}")
        elif kind in ("add", "replace"):
            if isinstance(target, list):
                target.insert(len(target) if last == "-" else int(last), op["value"])
            else:
                target[last] = copy.deepcopy(op["value"])
    return result


def invalid(message: str) -> KubeError:
    return KubeError(
        422, f"the server rejected our request due to an error in our request: {message}", "Invalid"
    )


def selected(obj: Object | None, selector: str | None) -> bool:
    if obj is None:
        return False
    labels = obj["metadata"].get("labels") or {}
    for term in filter(None, (selector or "").split(",")):
        if term.startswith("!"):
            if term[1:] in labels:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key) != value:
                return False
        elif term not in labels:
            return False
    return True
