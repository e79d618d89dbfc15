"""Where a system's CPU goes, from py-spy sampling its processes during an extra burst (not
one of the measured ones): by the innermost frame of the system's own code, and by the
package the CPU was in."""

from __future__ import annotations

import collections
import contextlib
import pathlib
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator

from _harness import VENV_BIN, Proc

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*)\)$")


def py_spy() -> str | None:
    found = VENV_BIN / "py-spy"
    return str(found) if found.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def sampled(procs: list[Proc], out_dir: pathlib.Path, label: str) -> Iterator[dict[str, str]]:
    """Runs `py-spy record` on each process (and its children) while the block runs; yields
    process name -> raw output file, complete once the block has ended."""
    binary = py_spy()
    if binary is None:
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    out_dir.mkdir(parents=True, exist_ok=True)
    spies: list[subprocess.Popen[bytes]] = []
    files: dict[str, str] = {}
    for proc in procs:
        if not proc.alive():
            continue
        path = out_dir / f"{label}-{proc.name}.txt"
        files[proc.name] = str(path)
        spies.append(
            subprocess.Popen(
                [
                    binary,
                    "record",
                    "--pid",
                    str(proc.pid),
                    "--subprocesses",
                    "--nonblocking",
                    "--nolineno",
                    "--format",
                    "raw",
                    "--rate",
                    "250",
                    "--output",
                    str(path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        yield files
    finally:
        for spy in spies:
            with contextlib.suppress(ProcessLookupError):
                spy.send_signal(signal.SIGINT)
        for spy in spies:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(5)


def _package(file: str) -> str:
    parts = file.replace("\\", "/").split("/")
    if parts[0] == "tideflow" and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0].removesuffix(".py") if len(parts) == 1 else parts[0]


def _idle(function: str, file: str) -> bool:
    """A thread waiting for something to do (py-spy does not always tell these from work):
    an event loop in its selector, a pool thread waiting for a job, a wait on a lock."""
    return (
        (file == "selectors.py" and function.endswith("select"))
        or (file == "concurrent/futures/thread.py" and function == "_worker")
        or (file == "threading.py" and function.endswith("wait"))
    )


def summarize(
    path: str, own_prefixes: tuple[str, ...], skip_prefixes: tuple[str, ...] = (), top: int = 12
) -> dict[str, object]:
    """From a py-spy raw file (one `frame;frame;... count` line per distinct stack): the share
    of busy samples by the innermost frame in the system's own code (files named with
    `own_prefixes`, other than `skip_prefixes`: the process's entry point), and by the
    package of the sampled (innermost) frame; idle samples (a thread waiting in a selector or
    on a lock) are counted apart."""
    own: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    busy = idle = 0
    try:
        lines = pathlib.Path(path).read_text().splitlines()
    except OSError:
        return {"samples": 0}
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_FRAME.match(frame) for frame in stack.split(";")]
        parsed = [(m["function"], m["file"]) for m in frames if m is not None]
        if not parsed:
            continue
        if _idle(*parsed[-1]):
            idle += count
            continue
        busy += count
        packages[_package(parsed[-1][1])] += count
        mine = [
            f"{function} ({file})"
            for function, file in parsed
            if file.startswith(own_prefixes) and not file.startswith(skip_prefixes)
        ]
        own[mine[-1] if mine else "(no frame of its own: event loop, libraries)"] += count

    def shares(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(key, round(100.0 * n / busy, 1)) for key, n in counter.most_common(top)]

    return {
        "samples": busy + idle,
        "busy_samples": busy,
        "by_own_frame": shares(own),
        "by_package": shares(packages),
    }
