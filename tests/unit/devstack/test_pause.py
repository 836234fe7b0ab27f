"""pause: SIGSTOP that returns only once every thread of the process has stopped (a real child
process with busy threads, no server)."""

import os
import signal
import subprocess
import sys

from smartflow_devstack.process import pause, thread_states

# Four threads spinning: each must be taken off the CPU by the stop, not only the one that got it.
BUSY = """
import threading
def spin():
    while True:
        pass
for _ in range(4):
    threading.Thread(target=spin, daemon=True).start()
print("ready", flush=True)
spin()
"""


def test_every_thread_is_stopped_when_pause_returns() -> None:
    proc = subprocess.Popen([sys.executable, "-c", BUSY], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        assert len(thread_states(proc.pid)) == 5
        for _ in range(20):
            pause(proc.pid)
            assert set(thread_states(proc.pid)) == {"T"}
            os.kill(proc.pid, signal.SIGCONT)
    finally:
        proc.kill()
        proc.wait()
