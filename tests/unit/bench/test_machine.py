"""The bench's machine readings: busy cores from /proc/stat and the wait for a quiet machine."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.machine import busy_cores, cpu_times, wait_quiet
from bench.procs import CpuMeter, run_queue_seconds
from bench.report import _quiet_wait, _rest_of_machine


def test_busy_cores_scale_the_busy_share_by_the_core_count() -> None:
    cores = os.cpu_count() or 1
    assert busy_cores((10.0, 100.0), (15.0, 110.0)) == round(0.5 * cores, 3)
    assert busy_cores((10.0, 100.0), (10.0, 100.0)) == 0.0  # no time passed
    busy, total = cpu_times()
    assert 0 <= busy <= total


async def test_a_machine_counts_as_quiet_below_the_bound_and_the_wait_gives_up_at_its_limit() -> None:
    roomy = await wait_quiet(max_busy_cores=(os.cpu_count() or 1) + 1.0, window=0.1, limit=5.0)
    assert roomy["quiet"] and roomy["waited_seconds"] < 1.0
    never = await wait_quiet(max_busy_cores=0.0, window=0.1, limit=0.3)
    assert not never["quiet"] and 0.3 <= never["waited_seconds"] < 2.0


def test_the_report_shows_what_ran_beside_the_measured_processes() -> None:
    run = {"cpu_cores_used": {"api": 0.5, "relay": 0.25}, "machine_busy_cores": 1.0}
    assert _rest_of_machine(run) == "0.25"
    assert _rest_of_machine({"cpu_cores_used": {"api": 0.5}}) == "-"  # an older result
    assert _quiet_wait({"quiet_wait": {"waited_seconds": 3.0, "quiet": True}}) == "3.0"
    assert _quiet_wait({"quiet_wait": {"waited_seconds": 120.0, "quiet": False}}) == "120.0 !"


def test_run_queue_waits_are_read_per_process_and_counted_per_group() -> None:
    assert run_queue_seconds(os.getpid()) >= 0.0
    # Busier than the cores: some of these processes have to wait for one.
    spinners = [
        subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<1.5: pass"])
        for _ in range((os.cpu_count() or 1) * 2)
    ]
    meter = CpuMeter(groups={"spinners": [p.pid for p in spinners]})
    meter.start()
    time.sleep(1.0)
    meter.stop()
    for p in spinners:
        p.wait()
    assert meter.waits["spinners"] > 0.1
    assert run_queue_seconds(spinners[0].pid) == 0.0  # gone
