"""A sampling profiler that runs inside a Python worker (py-spy cannot attach to Beam's workers).

Set ``RIVERFLINK_SAMPLE_PROFILE=DIR`` in the environment of a job; every
Python operator that calls :func:`start_if_asked` then samples all its
process's threads every few milliseconds and rewrites
``DIR/profile-<pid>.txt`` every few seconds with the most frequent stacks
(innermost frame last) and per-function self and total sample counts.
A development tool: off unless the variable is set, and never used by tests.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time

_started = False


def start_if_asked(interval_s: float = 0.005, write_every_s: float = 5.0) -> None:
    """Start the sampler once per process if ``RIVERFLINK_SAMPLE_PROFILE`` names a directory."""
    global _started
    out_dir = os.environ.get("RIVERFLINK_SAMPLE_PROFILE")
    if not out_dir or _started:
        return
    _started = True
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"profile-{os.getpid()}.txt")
    threading.Thread(target=_run, args=(path, interval_s, write_every_s), daemon=True,
                     name="riverflink-sampler").start()


def _label(frame) -> str:
    code = frame.f_code
    return f"{os.path.basename(code.co_filename)}:{code.co_name}"


def _thread_cpu() -> list[str]:
    """Each native thread's CPU seconds, with its Python name where it has one."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick, rows = os.sysconf("SC_CLK_TCK"), []
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = open(f"/proc/self/task/{tid}/stat").read()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat.rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError):
            continue
        rows.append((cpu, f"{cpu:8.2f} {tid} {comm} {names.get(int(tid), '')}"))
    return [r for _, r in sorted(rows, reverse=True) if _ > 0]


def _run(path: str, interval_s: float, write_every_s: float) -> None:
    me = threading.get_ident()
    stacks: collections.Counter = collections.Counter()
    self_counts: collections.Counter = collections.Counter()
    total_counts: collections.Counter = collections.Counter()
    samples, last_write, cpu0 = 0, time.time(), time.process_time()
    while True:
        time.sleep(interval_s)
        for ident, frame in sys._current_frames().items():
            if ident == me:
                continue
            names = []
            while frame is not None:
                names.append(_label(frame))
                frame = frame.f_back
            if not names or names[0].startswith(("threading.py:wait", "selectors.py", "_channel.py:_next",
                                                 "queue.py:get", "threading.py:_wait_for_tstate_lock")):
                continue  # idle threads
            samples += 1
            self_counts[names[0]] += 1
            for n in set(names):
                total_counts[n] += 1
            stacks[" <- ".join(names[:12])] += 1
        if time.time() - last_write >= write_every_s:
            last_write = time.time()
            with open(path + ".tmp", "w") as f:
                f.write(f"busy samples {samples}, process CPU {time.process_time() - cpu0:.1f} s\n\n== self\n")
                for n, c in self_counts.most_common(40):
                    f.write(f"{c:7d} {n}\n")
                f.write("\n== total\n")
                for n, c in total_counts.most_common(60):
                    f.write(f"{c:7d} {n}\n")
                f.write("\n== thread CPU (s)\n")
                for line in _thread_cpu():
                    f.write(line + "\n")
                f.write("\n== stacks\n")
                for s, c in stacks.most_common(30):
                    f.write(f"{c:7d} {s}\n")
            os.replace(path + ".tmp", path)
