"""A small async Kubernetes client over aiohttp (which kopf already brings), for the objects kopf
does not hand to handlers: Secrets, ConfigMaps, Deployments, Services, NetworkPolicies, claims,
disruption budgets, autoscalers, Events and Component status.

Credentials come from kopf's own login functions (`kopf.ConnectionInfo`), so the operator and kopf
talk to the same cluster as the same identity.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf

from . import metrics, naming

JSON = dict[str, Any]

_CORE = {
    "ConfigMap": "configmaps",
    "Service": "services",
    "Secret": "secrets",
    "Event": "events",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "Pod": "pods",
}
_APPS = {"Deployment": "deployments"}
_NETWORKING = {"NetworkPolicy": "networkpolicies"}
_GROUPED = {
    "PodDisruptionBudget": "policy/v1/namespaces/{}/poddisruptionbudgets",
    "HorizontalPodAutoscaler": "autoscaling/v2/namespaces/{}/horizontalpodautoscalers",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def path_of(kind: str, namespace: str, name: str = "") -> str:
    if kind in _CORE:
        base = f"/api/v1/namespaces/{namespace}/{_CORE[kind]}"
    elif kind in _APPS:
        base = f"/apis/apps/v1/namespaces/{namespace}/{_APPS[kind]}"
    elif kind in _NETWORKING:
        base = f"/apis/networking.k8s.io/v1/namespaces/{namespace}/{_NETWORKING[kind]}"
    elif kind in _GROUPED:
        base = "/apis/" + _GROUPED[kind].format(namespace)
    elif kind == naming.KIND:
        base = f"/apis/{naming.API_VERSION}/namespaces/{namespace}/{naming.PLURAL}"
    else:
        raise ValueError(f"unsupported kind {kind}")
    return f"{base}/{quote(name)}" if name else base


class Client:
    """One aiohttp session; re-logs in once on 401 (service account tokens rotate)."""

    def __init__(self, login: Callable[[], kopf.ConnectionInfo]) -> None:
        self._login = login
        self._session: aiohttp.ClientSession | None = None
        self._server = ""
        self._lock = asyncio.Lock()

    async def _open(self, renew: bool = False) -> aiohttp.ClientSession:
        async with self._lock:
            if self._session is not None and not renew:
                return self._session
            if self._session is not None:
                await self._session.close()
            info = self._login()
            self._server = info.server.rstrip("/")
            headers = {**info.as_http_headers(), "User-Agent": f"{naming.MANAGER}"}
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=30),
            )
            return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> JSON | None:
        """The decoded response; None on 404 (for GET and DELETE); ApiError otherwise."""
        for attempt in (0, 1):
            session = await self._open(renew=attempt == 1)
            data = None if body is None else json.dumps(body)
            headers = {"Content-Type": content_type} if body is not None else {}
            metrics.API_REQUESTS.labels(method).inc()
            async with session.request(
                method, self._server + path, data=data, headers=headers, params=params
            ) as response:
                if response.status == 401 and attempt == 0:
                    continue
                if response.status == 404 and method in ("GET", "DELETE"):
                    return None
                text = await response.text()
                if response.status >= 400:
                    try:
                        message = json.loads(text).get("message", text)
                    except ValueError:
                        message = text
                    raise ApiError(response.status, str(message))
                return json.loads(text) if text else {}
        raise AssertionError("unreachable")

    async def get(self, kind: str, namespace: str, name: str) -> JSON | None:
        return await self.request("GET", path_of(kind, namespace, name))

    async def apply(self, obj: Mapping[str, Any]) -> JSON:
        """Server-side apply with the operator's field manager (the caller compares first)."""
        meta = obj["metadata"]
        result = await self.request(
            "PATCH",
            path_of(obj["kind"], meta["namespace"], meta["name"]),
            body=obj,
            content_type="application/apply-patch+yaml",
            params={"fieldManager": naming.MANAGER, "force": "true"},
        )
        assert result is not None
        return result

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any] | None) -> JSON | None:
        """Merge-patch `.status` (None removes it)."""
        try:
            return await self.request(
                "PATCH",
                path_of(naming.KIND, namespace, name) + "/status",
                body={"status": status},
                content_type="application/merge-patch+json",
            )
        except ApiError as exc:
            if exc.status == 404:  # deleted meanwhile
                return None
            raise

    async def patch_annotations(
        self, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> JSON | None:
        """Merge-patch a Component's annotations (None removes one); None if it is gone."""
        try:
            return await self.request(
                "PATCH",
                path_of(naming.KIND, namespace, name),
                body={"metadata": {"annotations": dict(annotations)}},
                content_type="application/merge-patch+json",
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def add_owner(self, kind: str, namespace: str, name: str, owner: Mapping[str, Any]) -> JSON | None:
        """Add one ownerReference, keeping the others (a strategic merge by uid: no read-modify-write
        race with the garbage collector, which drops the references of deleted owners); None if gone."""
        try:
            return await self.request(
                "PATCH",
                path_of(kind, namespace, name),
                body={"metadata": {"ownerReferences": [dict(owner)]}},
                content_type="application/strategic-merge-patch+json",
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list_labelled(self, kind: str, namespace: str | None, label_selector: str) -> list[JSON]:
        """Objects of a core kind by label, in one namespace or all (None)."""
        path = path_of(kind, namespace) if namespace else f"/api/v1/{_CORE[kind]}"
        result = await self.request("GET", path, params={"labelSelector": label_selector})
        return list((result or {}).get("items") or [])

    async def discovery(self) -> JSON | None:
        """The APIResourceList of the Component's group version (None: not served)."""
        return await self.request("GET", f"/apis/{naming.API_VERSION}")

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        await self.request(
            "DELETE", path_of(kind, namespace, name), params={"propagationPolicy": "Background"}
        )

    async def create(self, obj: Mapping[str, Any]) -> JSON | None:
        meta = obj["metadata"]
        return await self.request("POST", path_of(obj["kind"], meta["namespace"]), body=obj)

    async def list_components(self, namespace: str | None) -> list[JSON]:
        """Components of one namespace, or of all when None (the operator's own watch scope)."""
        path = path_of(naming.KIND, namespace) if namespace else f"/apis/{naming.API_VERSION}/{naming.PLURAL}"
        result = await self.request("GET", path)
        return list((result or {}).get("items") or [])
