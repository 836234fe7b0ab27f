"""A throwaway PostgreSQL 15 cluster (initdb + postgres) on a free loopback port.

Installed from Debian packages when missing. Tuned for tests: durability is traded for
speed (fsync off), which is fine for data that lives as long as one test session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import pki
from .errors import StackError
from .node import network
from .process import free_port, run, spawn, tcp_open, wait_until
from .versions import POSTGRES_MAJOR, postgres_bindir

DATABASE = "smartflow"
USER = "smartflow"
PASSWORD = "smartflow"
# A role pg_hba admits only over TLS (``hostssl``; ``hostnossl`` rejects it), with its own database.
TLS_USER = "smartflow_tls"
TLS_PASSWORD = "smartflow-tls-secret"
TLS_DATABASE = "smartflow_tls"


@dataclass(frozen=True)
class PostgresInfo:
    pid: int
    port: int
    dsn: str
    # ssl=on with a server certificate from the stack's CA (pki.py); a client certificate too.
    ca_file: str = ""
    client_cert_file: str = ""
    client_key_file: str = ""

    def pod_dsn(self, database: str = DATABASE) -> str:
        """The DSN for clients in pods: the node's forwarder to this server's loopback port."""
        return dsn_for(self.port, database, host=network.NODE_IP)

    def tls_dsn(self, database: str = TLS_DATABASE, *, host: str = "127.0.0.1") -> str:
        """A DSN of the TLS-only role (no sslmode in it: the client chooses how to verify)."""
        return f"postgresql://{TLS_USER}:{TLS_PASSWORD}@{host}:{self.port}/{database}"

    def pod_tls_dsn(self, database: str = TLS_DATABASE) -> str:
        return self.tls_dsn(database, host=network.NODE_IP)


def ensure_installed() -> None:
    """Install the PostgreSQL server from Debian packages if its binaries are missing."""
    if (postgres_bindir() / "postgres").exists():
        return
    if os.geteuid() != 0:
        raise StackError(f"PostgreSQL {POSTGRES_MAJOR} is missing; install postgresql-{POSTGRES_MAJOR}")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-q"], what="apt-get update", env=env)
    run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", f"postgresql-{POSTGRES_MAJOR}"],
        what="apt-get install postgresql",
        env=env,
    )


def _server_user() -> str | None:
    # postgres will not run as root; use the system account the Debian package creates.
    return "postgres" if os.geteuid() == 0 else None


def start(state: Path) -> PostgresInfo:
    ensure_installed()
    user = _server_user()
    data = state / "postgres" / "data"
    sockets = state / "postgres" / "sock"
    log = state / "logs" / "postgres.log"
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
    sockets.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    if user is not None:
        for path in (state / "postgres", data, sockets):
            shutil.chown(path, user, user)
    pwfile = state / "postgres" / "pwfile"
    pwfile.write_text(PASSWORD + "\n")
    if user is not None:
        shutil.chown(pwfile, user, user)
    bindir = postgres_bindir()
    run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "-A",
            "scram-sha-256",
            "--auth-local=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        what="initdb",
        user=user,
    )
    server_tls = _issue_certificates(state, user)
    _admit_tls_role_over_tls_only(data / "pg_hba.conf")
    port = free_port()
    settings = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "unix_socket_directories": str(sockets),
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "300",
        "shared_buffers": "256MB",
        "log_min_messages": "warning",
        "ssl": "on",
        "ssl_cert_file": server_tls.cert_file,
        "ssl_key_file": server_tls.key_file,
        "ssl_ca_file": server_tls.ca_file,
    }
    argv = [str(bindir / "postgres"), "-D", str(data)]
    for key, value in settings.items():
        argv += ["-c", f"{key}={value}"]
    pid = spawn(argv, log=log, user=user)
    wait_until(lambda: tcp_open(port) and _ready(bindir, port), what="postgres", timeout=60, pid=pid, log=log)
    run(
        [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, DATABASE],
        what="createdb",
        env={"PGPASSWORD": PASSWORD},
    )
    _create_tls_role(bindir, port)
    return _info(state, pid, port)


def _info(state: Path, pid: int, port: int) -> PostgresInfo:
    tls = state / "postgres" / "tls"
    return PostgresInfo(
        pid=pid,
        port=port,
        dsn=dsn_for(port),
        ca_file=str(pki.authority(state) / "ca.crt"),
        client_cert_file=str(tls / "client.crt"),
        client_key_file=str(tls / "client.key"),
    )


@dataclass(frozen=True)
class _ServerTls:
    cert_file: str
    key_file: str
    ca_file: str


def _issue_certificates(state: Path, user: str | None) -> _ServerTls:
    tls = state / "postgres" / "tls"
    server = pki.issue(
        state, tls, "server", subject="/CN=smartflow-postgres", sans=pki.SERVER_SANS, server=True
    )
    pki.issue(state, tls, "client", subject=f"/CN={TLS_USER}", client=True)
    # The server refuses a key file others can read; clients' files stay readable for tests.
    os.chmod(server.key_file, 0o600)
    if user is not None:
        shutil.chown(server.key_file, user, user)
        shutil.chown(server.cert_file, user, user)
    return _ServerTls(server.cert_file, server.key_file, str(pki.authority(state) / "ca.crt"))


def _admit_tls_role_over_tls_only(hba: Path) -> None:
    # pg_hba takes the first matching line: these go before initdb's own host lines.
    rules = f"hostnossl all {TLS_USER} all reject\nhostssl all {TLS_USER} all scram-sha-256\n"
    hba.write_text(rules + hba.read_text())


def _create_tls_role(bindir: Path, port: int) -> None:
    psql = [str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, "-v", "ON_ERROR_STOP=1"]
    env = {"PGPASSWORD": PASSWORD}
    run(
        [*psql, "-d", DATABASE, "-c", f"CREATE ROLE {TLS_USER} LOGIN CREATEDB PASSWORD '{TLS_PASSWORD}'"],
        what="create TLS role",
        env=env,
    )
    run(
        [*psql, "-d", DATABASE, "-c", f"CREATE DATABASE {TLS_DATABASE} OWNER {TLS_USER}"],
        what="createdb tls",
        env=env,
    )


def dsn_for(port: int, database: str = DATABASE, *, host: str = "127.0.0.1") -> str:
    return f"postgresql://{USER}:{PASSWORD}@{host}:{port}/{database}"


def _ready(bindir: Path, port: int) -> bool:
    result = subprocess.run(
        [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True, check=False
    )
    return result.returncode == 0


# --- stopping and starting again on the same port, keeping the data (fault drills) ---------------


def stop_keeping_data(info: PostgresInfo, *, timeout: float = 30.0) -> None:
    """Fast shutdown of a server :func:`start` began: clients are disconnected, the data stays.

    SIGINT is PostgreSQL's "fast" mode; SIGTERM ("smart") would wait for every client to leave.
    """
    import signal

    from .process import stop

    stop(info.pid, sig=signal.SIGINT, timeout=timeout)


def start_again(state: Path, port: int) -> PostgresInfo:
    """Start the cluster in ``state`` again with the exact options of its last start (same port,
    same data): the server records them in ``postmaster.opts``."""
    import shlex

    data = state / "postgres" / "data"
    log = state / "logs" / "postgres.log"
    argv = shlex.split((data / "postmaster.opts").read_text())
    pid = spawn(argv, log=log, user=_server_user())
    bindir = postgres_bindir()
    wait_until(
        lambda: tcp_open(port) and _ready(bindir, port), what="postgres restart", timeout=60, pid=pid, log=log
    )
    return _info(state, pid, port)
