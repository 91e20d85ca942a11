"""KubeConfig: how to reach the Kubernetes API server, from the pod's service account
or from a kubeconfig file.

Rules:
1. Configuration only: reading the service account or kubeconfig happens once, at
   construction; nothing here talks to the network.
2. ``token_file`` is re-read on every request (``bearer()``): in-cluster
   service-account tokens are rotated by the kubelet (bound tokens expire after an
   hour).
3. Supported kubeconfig users: a token, a token file, a client certificate (inline or
   as files). ``exec`` and ``auth-provider`` users are refused with a ConfigError, not
   half-supported.
4. Relative paths in a kubeconfig are relative to the kubeconfig's directory.
5. TLS is built by the control-plane client (``smg.upstream.client.tls_context``);
   ``http://`` servers (tests) get no TLS context.
"""
from __future__ import annotations

import base64
import os
import ssl
from dataclasses import dataclass

from smg.errors import ConfigError
from smg.upstream.client import tls_context
from smg.workers.discovery.errors import KubeError

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass
class KubeConfig:
    """How to reach the API server."""

    server: str
    token: str | None = None
    token_file: str | None = None
    ca_file: str | None = None
    ca_data: str | None = None            # PEM text
    insecure: bool = False                # insecure-skip-tls-verify
    client_cert_data: bytes | None = None  # PEM (kubeconfig client-certificate[-data])
    client_key_data: bytes | None = None
    namespace: str | None = None          # the pod's / context's namespace (informational)

    @classmethod
    def in_cluster(cls, environ: dict | None = None, sa_dir: str = SA_DIR) -> KubeConfig:
        """From ``KUBERNETES_SERVICE_HOST/PORT`` and the mounted service account.

        Raises:
            ConfigError: not running in a pod.
        """
        env = os.environ if environ is None else environ
        host = env.get("KUBERNETES_SERVICE_HOST")
        if not host:
            raise ConfigError("service_discovery", "KUBERNETES_SERVICE_HOST is not set (not in a pod?)")
        port = env.get("KUBERNETES_SERVICE_PORT", "443")
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        token_file = os.path.join(sa_dir, "token")
        if not os.path.exists(token_file):
            raise ConfigError("service_discovery", f"no service-account token at {token_file}")
        ca = os.path.join(sa_dir, "ca.crt")
        ns = None
        try:
            with open(os.path.join(sa_dir, "namespace")) as f:
                ns = f.read().strip() or None
        except OSError:
            pass
        return cls(server=f"https://{host}:{port}", token_file=token_file,
                   ca_file=ca if os.path.exists(ca) else None, namespace=ns)

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, context: str | None = None) -> KubeConfig:
        """From a kubeconfig (``path``, else ``$KUBECONFIG``'s first entry, else
        ``~/.kube/config``): the context's cluster server, CA and user token or client
        certificate.

        Raises:
            ConfigError: unreadable file, missing context/cluster/user, exec/auth-provider user.
        """
        import yaml

        if path is None:
            env = os.environ.get("KUBECONFIG")
            path = env.split(os.pathsep)[0] if env else os.path.expanduser("~/.kube/config")
        try:
            with open(path, "rb") as f:
                doc = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError("kubeconfig", f"cannot read {path}: {e}") from None
        base = os.path.dirname(os.path.abspath(path))

        def named(section: str, name: str | None) -> dict:
            for item in doc.get(section) or ():
                if isinstance(item, dict) and item.get("name") == name:
                    return item.get(section[:-1]) or {}
            raise ConfigError("kubeconfig", f"{path}: no {section[:-1]} named {name!r}")

        def rel(p: str | None) -> str | None:
            return None if p is None else (p if os.path.isabs(p) else os.path.join(base, p))

        def b64(v: str | None) -> bytes | None:
            return None if v is None else base64.b64decode(v)

        def read(p: str | None) -> bytes | None:
            if p is None:
                return None
            with open(p, "rb") as f:
                return f.read()

        ctx_name = context or doc.get("current-context")
        ctx = named("contexts", ctx_name)
        cluster = named("clusters", ctx.get("cluster"))
        user = named("users", ctx.get("user")) if ctx.get("user") else {}
        server = cluster.get("server")
        if not server:
            raise ConfigError("kubeconfig", f"{path}: cluster {ctx.get('cluster')!r} has no server")
        if "exec" in user or "auth-provider" in user:
            raise ConfigError("kubeconfig", f"{path}: exec/auth-provider users are not supported; "
                                            "use a token or a client certificate")
        ca_data = b64(cluster.get("certificate-authority-data"))
        try:
            cert = b64(user.get("client-certificate-data")) or read(rel(user.get("client-certificate")))
            key = b64(user.get("client-key-data")) or read(rel(user.get("client-key")))
        except OSError as e:
            raise ConfigError("kubeconfig", f"{path}: {e}") from None
        return cls(server=server.rstrip("/"), token=user.get("token"), token_file=rel(user.get("tokenFile")),
                   ca_file=rel(cluster.get("certificate-authority")),
                   ca_data=ca_data.decode() if ca_data else None,
                   insecure=bool(cluster.get("insecure-skip-tls-verify")),
                   client_cert_data=cert, client_key_data=key, namespace=ctx.get("namespace"))

    @classmethod
    def auto(cls, kubeconfig: str | None = None) -> KubeConfig:
        """In-cluster when running in a pod (and no kubeconfig given), else a kubeconfig."""
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            return cls.in_cluster()
        return cls.from_kubeconfig(kubeconfig)

    def bearer(self) -> str | None:
        """The bearer token to send now (the token file read afresh), or None.

        Raises:
            KubeError: the token file cannot be read.
        """
        if self.token_file:
            try:
                with open(self.token_file) as f:
                    return f.read().strip() or None
            except OSError as e:
                raise KubeError(f"cannot read token {self.token_file}: {e.strerror or e}") from None
        return self.token

    def ssl_context(self) -> ssl.SSLContext | None:
        """None for ``http://`` servers (tests); else a client context verifying the
        server against the CA (unless ``insecure``) and presenting the client
        certificate if there is one."""
        if not self.server.startswith("https://"):
            return None
        return tls_context(ca_file=self.ca_file, ca_data=self.ca_data, cert_data=self.client_cert_data,
                           key_data=self.client_key_data, insecure=self.insecure)
