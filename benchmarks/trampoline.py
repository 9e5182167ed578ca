"""Small stdlib-only parent for one benchmark child: fork, exec, watch memory, reap.

Why a trampoline: Linux carries a process's peak RSS (`ru_maxrss`) across fork and exec,
so a child spawned straight from a big parent (the suite, pytest with torch loaded)
reports at least the parent's size. Forked from this ~10 MB process instead, the
child's `ru_maxrss` is its own. Run as a script (`python trampoline.py REPORT BUDGET
TIMEOUT -- CMD...`); writes `{"returncode", "peak_rss_bytes", "over_budget",
"timed_out"}` as JSON to REPORT.
"""

import json
import os
import signal
import sys
import time

POLL_S = 0.02


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def main(argv: list[str]) -> int:
    report, budget_arg, timeout_arg, sep, *cmd = argv
    if sep != "--" or not cmd:
        raise SystemExit("usage: trampoline.py REPORT BUDGET|none TIMEOUT -- CMD...")
    budget = None if budget_arg == "none" else int(budget_arg)
    deadline = time.monotonic() + float(timeout_arg)
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    over = timed_out = False
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if budget is not None and not over and _rss_bytes(pid) > budget:
            over = True
            os.kill(pid, signal.SIGKILL)
        elif not timed_out and time.monotonic() > deadline:
            timed_out = True
            os.kill(pid, signal.SIGKILL)
        time.sleep(POLL_S)
    peak = int(usage.ru_maxrss) * 1024  # kilobytes on Linux
    result = {
        "returncode": os.waitstatus_to_exitcode(status),
        "peak_rss_bytes": peak,
        "over_budget": over or (budget is not None and peak > budget),
        "timed_out": timed_out,
    }
    tmp = report + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(result, handle)
    os.replace(tmp, report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
