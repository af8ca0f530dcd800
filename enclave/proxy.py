"""The proxy, with sandboxes as ``http+unix://`` targets.

Shim for JupyterHub 6.1.1: a server's proxy target is ``Server.host``, which JupyterHub builds as
``{proto}://{ip}:{port}``. For a unix-socket server it stores port 80 (``User.spawn`` sets port 80
when the URL has none), so the target becomes ``http+unix://%2F...sock:80``, which
configurable-http-proxy cannot resolve. Routes are stored without that port and reported with it,
so JupyterHub's own route check still sees the target it expects. (The hub's own route has no
port: JupyterHub keeps a socket URL as given for the hub, so only servers' routes are touched.)
"""

from __future__ import annotations

import re

from jupyterhub.proxy import ConfigurableHTTPProxy

_UNIX_PORT = re.compile(r"^(http\+unix://[^/:]+):80(?=/|$)")
_UNIX_NO_PORT = re.compile(r"^(http\+unix://[^/:]+)(?=/|$)")


def strip_unix_port(target: str) -> str:
    return _UNIX_PORT.sub(r"\1", target)


def add_unix_port(target: str) -> str:
    return _UNIX_NO_PORT.sub(r"\1:80", target)


class UnixSocketProxy(ConfigurableHTTPProxy):
    async def add_route(self, routespec, target, data):
        return await super().add_route(routespec, strip_unix_port(target), data)

    async def get_all_routes(self):
        routes = await super().get_all_routes()
        for route in routes.values():
            if "user" in route["data"]:
                route["target"] = add_unix_port(route["target"])
        return routes
