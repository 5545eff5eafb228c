"""Run OSRA (optical structure recognition) on an image and parse the structures it finds.

`osra -c -f can FILE` prints one line per structure: the canonical SMILES,
then its box as `x1xy1-x2xy2`, the top-left and bottom-right corners in
pixels of the original image, for example
`CC(=O)Nc1ccc(cc1)O 420x131-779x269` (osra 2.1.3, Debian bookworm).
It prints nothing and exits with 0 when it finds no structure.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass

# Path of the osra program. Without it, osra is looked up on PATH.
OSRA_BIN_VARIABLE = "OSRA_BIN"
OUTPUT_LINE = re.compile(r"^(?P<smiles>\S+)\s+(?P<x1>\d+)x(?P<y1>\d+)-(?P<x2>\d+)x(?P<y2>\d+)$")


class OsraNotInstalled(RuntimeError):
    """The osra program is not installed or not found."""


class OsraTimeout(TimeoutError):
    """osra ran past the time left for the invocation and was killed."""


class OsraFailed(RuntimeError):
    """osra exited with an error status or printed output that cannot be parsed."""


@dataclass(frozen=True)
class OsraResult:
    structures: list[tuple[str, list[int]]]  # (SMILES, [x1, y1, x2, y2]) in osra's order
    cpu_ms: float  # user + system CPU time of the osra process


def find_osra() -> str:
    """Return the path of the osra program, from $OSRA_BIN or PATH."""
    configured = os.environ.get(OSRA_BIN_VARIABLE)
    if configured:
        if os.path.isfile(configured) and os.access(configured, os.X_OK):
            return configured
        raise OsraNotInstalled(
            f"{OSRA_BIN_VARIABLE} is {configured!r}, which is not an executable file; "
            f"install OSRA with: apt-get install osra, and set {OSRA_BIN_VARIABLE} to its path or remove it"
        )
    found = shutil.which("osra")
    if found is None:
        raise OsraNotInstalled(
            f"the osra program was not found on PATH ({os.environ.get('PATH', '')}); "
            "install OSRA with: apt-get install osra"
        )
    return found


def recognise(image: bytes, suffix: str, timeout_s: float) -> OsraResult:
    """Write the image to a temporary file, run osra on it, and return the structures it found."""
    program = find_osra()
    with tempfile.NamedTemporaryFile(prefix="image-molecules-", suffix=suffix) as image_file:
        image_file.write(image)
        image_file.flush()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        output = run_osra([program, "-c", "-f", "can", image_file.name], timeout_s)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return OsraResult(parse_osra_output(output), round(cpu_s * 1000, 3))


def run_osra(command: list[str], timeout_s: float) -> str:
    """Run osra and return its standard output, or kill it and raise OsraTimeout after timeout_s seconds.

    osra runs in its own process group, so a timeout kills anything it
    started as well. The process is always waited for before this returns,
    so its CPU time is in getrusage(RUSAGE_CHILDREN) of this process.
    """
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_and_reap(process)
        raise OsraTimeout(
            f"osra timed out after {timeout_s:.1f} s and was killed; "
            "raise timeout_s in function.toml or send a smaller image"
        ) from None
    except BaseException:
        _kill_and_reap(process)
        raise
    if process.returncode != 0:
        raise OsraFailed(f"osra {_describe_status(process.returncode)}: {_last_line(stderr)}")
    return stdout


def parse_osra_output(text: str) -> list[tuple[str, list[int]]]:
    """Parse the lines of `osra -c -f can` into (SMILES, [x1, y1, x2, y2]) pairs."""
    structures = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        match = OUTPUT_LINE.match(line)
        if match is None:
            raise OsraFailed(f"cannot parse the osra output line {line!r}; expected 'SMILES x1xy1-x2xy2'")
        box = [int(match[name]) for name in ("x1", "y1", "x2", "y2")]
        structures.append((match["smiles"], box))
    return structures


def _kill_and_reap(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group is gone already
    process.communicate()


def _describe_status(returncode: int) -> str:
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        return f"was killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"was killed by signal {-returncode}"


def _last_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else "no error output"
