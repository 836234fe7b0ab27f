"""Forwarders that let pods reach the servers on the host's loopback, and nothing else.

One process opens its listening sockets *inside* the node's network namespace (on ``NODE_IP``),
then returns to the host's namespace and connects every accepted connection to the same port on
127.0.0.1. A socket keeps the namespace it was created in, so one asyncio loop serves both sides.
Pods thus reach PostgreSQL, Kafka's pod listener and kube-apiserver at ``NODE_IP:<port>`` while
every packet stays on loopback or inside the node's namespace.

Run by the stack as ``python -m smartflow_devstack.node.forward --netns PATH --address IP --port P...``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import socket

CLONE_NEWNET = 0x40000000


def _setns(path: str) -> None:
    # os.setns arrived in Python 3.12; the project supports 3.11, so call libc directly.
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({path}): {os.strerror(errno)}")
    finally:
        os.close(fd)


def listen_inside(netns: str, address: str, ports: list[int]) -> list[socket.socket]:
    """Listening sockets bound in ``netns``; the calling thread is back in its own namespace after."""
    own = f"/proc/{os.getpid()}/task/{os.getpid()}/ns/net"
    home = os.open(own, os.O_RDONLY)
    try:
        _setns(netns)
        sockets = []
        for port in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(256)
            sock.setblocking(False)
            sockets.append(sock)
    finally:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.setns(home, CLONE_NEWNET)
        os.close(home)
    return sockets


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


def _handler(port: int):  # type: ignore[no-untyped-def]
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    return handle


async def serve(sockets: list[socket.socket]) -> None:
    servers = [
        await asyncio.start_server(_handler(sock.getsockname()[1]), sock=sock, limit=65536)
        for sock in sockets
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"forwarding {[s.getsockname() for s in sockets]} -> 127.0.0.1", flush=True)
    await stop.wait()
    for server in servers:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--netns", required=True, help="path of the node's network namespace")
    parser.add_argument("--address", required=True, help="address inside it to listen on")
    parser.add_argument("--port", type=int, action="append", required=True, help="port (repeatable)")
    args = parser.parse_args()
    sockets = listen_inside(args.netns, args.address, args.port)
    asyncio.run(serve(sockets))


if __name__ == "__main__":
    main()
