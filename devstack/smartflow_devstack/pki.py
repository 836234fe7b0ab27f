"""The local stack's certificate authority and the certificates it issues (openssl CLI).

One CA per state directory (``<state>/pki/ca.crt``), made on first use and then kept, so every
server of a stack (kube-apiserver, Kafka's TLS listeners, PostgreSQL's ``ssl=on``) and every
client certificate chains to the same root, also across a fault drill's restart. Nothing here is
committed: the files live under the state directory and vanish with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .node import network
from .process import run

# Where clients on the host (127.0.0.1, localhost) and in pods (the node's forwarder) connect.
SERVER_SANS = ("IP:127.0.0.1", "DNS:localhost", f"IP:{network.NODE_IP}")


@dataclass(frozen=True)
class Issued:
    cert_file: str
    key_file: str


def _openssl(*args: str) -> None:
    run(["openssl", *args], what="openssl " + args[0])


def authority(state: Path) -> Path:
    """The directory holding the stack's ``ca.crt``/``ca.key``; created once, reused afterwards."""
    pki = state / "pki"
    if (pki / "ca.crt").exists() and (pki / "ca.key").exists():
        return pki
    pki.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=smartflow-local-ca",
        "-keyout", str(pki / "ca.key.tmp"), "-out", str(pki / "ca.crt.tmp"),
    )  # fmt: skip
    # Renamed last so a half-written CA is never taken for a finished one.
    (pki / "ca.key.tmp").rename(pki / "ca.key")
    (pki / "ca.crt.tmp").rename(pki / "ca.crt")
    return pki


def issue(
    state: Path,
    directory: Path,
    name: str,
    *,
    subject: str,
    sans: tuple[str, ...] = (),
    server: bool = False,
    client: bool = False,
) -> Issued:
    """A fresh key and certificate ``<directory>/<name>.{key,crt}`` signed by the stack's CA.

    ``sans`` are openssl subjectAltName entries (``IP:...``, ``DNS:...``); the key is unencrypted
    PKCS#8 (what Kafka's PEM key store and PostgreSQL both read).
    """
    ca = authority(state)
    directory.mkdir(parents=True, exist_ok=True)
    usages = [u for u, wanted in (("serverAuth", server), ("clientAuth", client)) if wanted]
    extensions = directory / f"{name}.cnf"
    lines = [
        "[req]",
        "distinguished_name=dn",
        "[dn]",
        "[ext]",
        "basicConstraints=CA:FALSE",
        "keyUsage=digitalSignature,keyEncipherment",
        "extendedKeyUsage=" + ",".join(usages or ["serverAuth"]),
    ]
    if sans:
        lines.append("subjectAltName=" + ",".join(sans))
    extensions.write_text("\n".join(lines) + "\n")
    key, csr, cert = (directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", str(key), "-out", str(csr))
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca / "ca.crt"), "-CAkey", str(ca / "ca.key"),
        "-CAcreateserial", "-days", "3650", "-extfile", str(extensions), "-extensions", "ext",
        "-out", str(cert),
    )  # fmt: skip
    return Issued(cert_file=str(cert), key_file=str(key))


def foreign_authority(directory: Path) -> Path:
    """A second, unrelated CA (``<directory>/ca.crt``): what a client with the wrong CA trusts."""
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / "ca.crt").exists():
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=not-the-stack-ca",
            "-keyout", str(directory / "ca.key"), "-out", str(directory / "ca.crt"),
        )  # fmt: skip
    return directory / "ca.crt"
