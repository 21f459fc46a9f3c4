"""How the operator logs in to the API server: in-cluster, or a kubeconfig read at login time.

Kopf's ``login_via_client`` loads the kubeconfig from ``kubernetes.config``'s default location,
which that module computes from ``$KUBECONFIG`` once, at import: a ``KUBECONFIG`` set later (by
a test fixture, by a wrapper script) was ignored and login failed (issue 11). Here the file is
chosen when logging in, and the client configuration is a local object, never the process-wide
default, so two operators in one process can talk to two clusters.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import kopf

__all__ = ["kubeconfig_login"]


def kubeconfig_login(kubeconfig: str = "", *, trust_env: bool = False) -> kopf.ConnectionInfo:
    """``kubeconfig`` when given; else in-cluster; else ``$KUBECONFIG`` or ``~/.kube/config``."""
    import kubernetes

    configuration = kubernetes.client.Configuration()
    if not kubeconfig:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException:
            pass
        else:
            return _connection_info(configuration, trust_env)
    files = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    try:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=files, client_configuration=configuration
        )
    except (kubernetes.config.ConfigException, OSError) as exc:
        where = files if kubeconfig else f"not in a cluster, and kubeconfig {files}"
        raise kopf.LoginError(f"no Kubernetes credentials: {where}: {exc}") from exc
    return _connection_info(configuration, trust_env)


def _connection_info(configuration: Any, trust_env: bool) -> kopf.ConnectionInfo:
    # As kopf.login_via_client reads a configured client: the header holds "<scheme> <token>"
    # (BearerToken since kubernetes 36.0.1, authorization before).
    header: str | None = configuration.get_api_key_with_prefix(
        "BearerToken"
    ) or configuration.get_api_key_with_prefix("authorization")
    parts: Sequence[str] = header.split(" ", 1) if header else []
    scheme, token = (
        (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    )
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        username=configuration.username or None,
        password=configuration.password or None,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        trust_env=trust_env,
    )
