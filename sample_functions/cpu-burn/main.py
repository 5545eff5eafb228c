"""Burns the requested milliseconds of CPU time: {"cpu_ms": 200}.

It spins until the process's own CPU clock has advanced by cpu_ms, so the
work is CPU time, not wall time, even on a busy machine.
"""

import time


def handler(event, context):
    cpu_ms = float(event.get("cpu_ms", 100))
    if cpu_ms < 0:
        raise ValueError(f"cpu_ms must be 0 or more, got {cpu_ms}")
    target_ns = time.process_time_ns() + int(cpu_ms * 1e6)
    spins = 0
    while time.process_time_ns() < target_ns:
        spins += 1
    return {"cpu_ms_requested": cpu_ms, "spins": spins}
