"""The few kube-apiserver calls the local runner makes, over aiohttp: list and watch Deployments, read
Secrets and ConfigMaps, patch a Deployment's ``status`` subresource. Credentials come from a
kubeconfig (loaded by the ``kubernetes`` client's loader, so tokens, client certificates and CA
files work as with kubectl). Errors leave as :class:`KubeApiError`.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from .errors import KubeApiError

Json = dict[str, Any]

_REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=10)
WATCH_SECONDS = 240


class KubeApi:
    """A small apiserver client; use as ``async with KubeApi.from_kubeconfig(path) as api``."""

    def __init__(self, *, server: str, ssl_context: ssl.SSLContext | None, headers: dict[str, str]) -> None:
        self.server = server.rstrip("/")
        self._ssl = ssl_context
        self._headers = headers
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, *, context: str | None = None) -> KubeApi:
        """From a kubeconfig file (``None``: ``$KUBECONFIG`` or ``~/.kube/config``)."""
        configuration = k8s_client.Configuration()
        try:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=path, context=context, client_configuration=configuration
            )
        except (k8s_config.ConfigException, OSError) as error:
            raise KubeApiError(f"cannot load kubeconfig {path or '(default)'}: {error}") from error
        ssl_context: ssl.SSLContext | None = None
        if configuration.host.startswith("https"):
            ssl_context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
            if configuration.cert_file:
                ssl_context.load_cert_chain(configuration.cert_file, configuration.key_file)
            if not configuration.verify_ssl:
                ssl_context.check_hostname = False
                ssl_context.verify_mode = ssl.CERT_NONE
        headers = {"Accept": "application/json"}
        token = configuration.api_key.get("BearerToken") or configuration.api_key.get("authorization")
        if token:
            headers["Authorization"] = str(token)
        return cls(server=configuration.host, ssl_context=ssl_context, headers=headers)

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else False)
            self._session = aiohttp.ClientSession(headers=self._headers, connector=connector)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> KubeApi:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def list_deployments(self, namespace: str | None, *, selector: str) -> list[Json]:
        """Deployments matching ``selector`` in ``namespace`` (``None``: every namespace)."""
        body = await self._request("GET", _deployments_path(namespace), query={"labelSelector": selector})
        items: list[Json] = (body or {}).get("items") or []
        for item in items:
            item.setdefault("apiVersion", "apps/v1")
            item.setdefault("kind", "Deployment")
        return items

    async def watch_deployments(self, namespace: str | None, *, selector: str) -> AsyncIterator[Json]:
        """Watch events (``{"type": ..., "object": ...}``) until the server ends the watch."""
        session = self._open()
        query = {"labelSelector": selector, "watch": "true", "timeoutSeconds": str(WATCH_SECONDS)}
        url = f"{self.server}{_deployments_path(namespace)}?{urlencode(query)}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=WATCH_SECONDS + 30)
        try:
            async with session.get(url, timeout=timeout) as response:
                if response.status != 200:
                    raise KubeApiError(
                        f"watch {url}: {response.status} {await response.text()}", status=response.status
                    )
                buffer = b""
                async for chunk in response.content.iter_any():
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield json.loads(line)
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as error:
            raise KubeApiError(f"watch {url}: {error}") from error

    async def get_secret(self, namespace: str, name: str) -> Json | None:
        return await self._get_or_none(f"/api/v1/namespaces/{quote(namespace)}/secrets/{quote(name)}")

    async def get_config_map(self, namespace: str, name: str) -> Json | None:
        return await self._get_or_none(f"/api/v1/namespaces/{quote(namespace)}/configmaps/{quote(name)}")

    async def patch_deployment_status(self, namespace: str, name: str, status: Json) -> bool:
        """Merge-patch the ``status`` subresource; false when the Deployment is gone."""
        path = f"/apis/apps/v1/namespaces/{quote(namespace)}/deployments/{quote(name)}/status"
        try:
            await self._request(
                "PATCH", path, body={"status": status}, content_type="application/merge-patch+json"
            )
        except KubeApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    async def get(self, path: str) -> Json | None:
        """Any object by API path (the demo reads its SmartflowRuntime this way); None if absent."""
        return await self._get_or_none(path)

    async def _get_or_none(self, path: str) -> Json | None:
        try:
            return await self._request("GET", path)
        except KubeApiError as error:
            if error.status == 404:
                return None
            raise

    async def _request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Json | None = None,
        content_type: str = "application/json",
    ) -> Json | None:
        session = self._open()
        url = f"{self.server}{path}" + (f"?{urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": content_type} if data is not None else {}
        try:
            async with session.request(
                method, url, data=data, headers=headers, timeout=_REQUEST_TIMEOUT
            ) as response:
                text = await response.text()
                if response.status >= 300:
                    raise KubeApiError(
                        f"{method} {path}: {response.status} {text[:500]}", status=response.status
                    )
                return json.loads(text) if text else None
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as error:
            raise KubeApiError(f"{method} {path}: {error}") from error

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise KubeApiError("KubeApi is not started (use `async with` or start())")
        return self._session


def _deployments_path(namespace: str | None) -> str:
    if namespace is None:
        return "/apis/apps/v1/deployments"
    return f"/apis/apps/v1/namespaces/{quote(namespace)}/deployments"
