"""``python -m bench.listener DSN CHANNEL OUT``: record every NOTIFY on CHANNEL with its arrival time.

Runs as its own process so the load generator's event loop cannot delay the timestamps. Each
line of OUT is ``<arrival wall-clock seconds> <payload>``; the file is complete once the process
exits after SIGTERM. Wall-clock time (``time.time()``) is comparable across processes on one
machine and with PostgreSQL's ``clock_timestamp()``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Sequence

import asyncpg


def write_text(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


async def listen(dsn: str, channel: str, out: str) -> list[str]:
    lines: list[str] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def record(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        lines.append(f"{time.time():.6f} {payload}")

    conn = await asyncpg.connect(dsn)
    try:
        await conn.add_listener(channel, record)
        # The ready file names the listening backend, so the bench leaves its CPU out of the
        # pipeline's PostgreSQL figure (it reads every NOTIFY of the database, the relay's too).
        write_text(out + ".ready", f"{conn.get_server_pid()}\n")
        await stop.wait()
    finally:
        await conn.close()
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    dsn, channel, out = list(argv if argv is not None else sys.argv[1:])
    lines = asyncio.run(listen(dsn, channel, out))
    write_text(out, "\n".join(lines) + ("\n" if lines else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
