"""Scale down under load, again and again, and count what clients saw.

The stack test scales 4 -> 2 once per run; a fault that shows once in several scale-downs
needs many to show, or to be shown gone. This brings a stack up as the test does (same
images, compose tool and project settings), sends ``tapad loadgen post --retries 0`` through
nginx the whole time, and repeats: ``--scale analyticsserver=UP``, wait until every replica
answers POSTs, ``--scale analyticsserver=DOWN``, wait past nginx's re-resolution. At the end
(Ctrl-C also ends it) it prints loadgen's summary and what nginx logged: 502s show as
``no live upstreams``, connections that hung as ``upstream timed out ... while connecting``.
Exit status 1 if any client request failed. One stack at a time per machine, please::

    .venv/bin/python -m tests.deploy.soak --cycles 30            # 2 -> 4 -> 2, 250 POSTs/s
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.deploy.test_stack import (
    Stack,
    compose_tool,
    docker_daemon_problem,
    posts_served,
    run,
    running_stack,
    wait_for,
)

SETTLE = 5.0  # after a scale-down: past nginx's re-resolution (2 s) of the replicas gone


def every_replica_serves(stack: Stack, count: int) -> None:
    """Wait until ``count`` replicas run and each answered a POST since this call."""
    wait_for(f"{count} healthy replicas", lambda: stack.healthy("analyticsserver", count))
    before = {c: posts_served(c) for c in stack.containers("analyticsserver")}
    wait_for(
        f"each of {count} replicas to answer POSTs",
        lambda: all(posts_served(c) > before.get(c, 0) for c in before),
    )


def soak(stack: Stack, cycles: int, up: int, down: int, rate: float) -> int:
    nginx = stack.containers("nginx")[0]
    since = str(int(time.time()))
    load = subprocess.Popen(
        [sys.executable, "-m", "tapad", "loadgen", "post", "--url", stack.url,
         "-n", "100000000", "-c", "16", "--rate", str(rate), "--retries", "0",
         "--seed", "10", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    done = 0
    try:
        every_replica_serves(stack, down)
        for _ in range(cycles):
            stack.compose("up", "-d", "--scale", f"analyticsserver={up}")
            every_replica_serves(stack, up)
            start = time.monotonic()
            stack.compose("up", "-d", "--scale", f"analyticsserver={down}")
            took = time.monotonic() - start
            time.sleep(SETTLE)  # load runs on the smaller stack on purpose before the next cycle
            done += 1
            print(f"{time.strftime('%H:%M:%S')} scale-down {done}: {took:.1f} s", flush=True)
            if load.poll() is not None:
                break
    except KeyboardInterrupt:
        pass
    finally:
        if load.poll() is None:
            load.send_signal(signal.SIGINT)  # loadgen stops and prints its summary
        out, err = load.communicate(timeout=120)
    summary = json.loads(out) if out.strip() else {"stderr": err[-2000:]}
    logs = run(["docker", "logs", "--since", since, nginx]).stderr.splitlines()
    lines = [line for line in logs if "[error]" in line or "[warn]" in line]
    keys = ("requests", "acknowledged", "answers", "failed", "failures", "retried", "latency_ms")
    print(json.dumps({k: summary.get(k) for k in keys}))
    print(f"scale-downs {up} -> {down} under load: {done}")
    for what in ("no live upstreams", "timed out", "Connection refused"):
        print(f"nginx lines with {what!r}: {sum(what in line for line in lines)}")
    for line in lines:
        if "no live upstreams" in line:
            print(line[:200])
    return 1 if summary.get("failed") or "stderr" in summary else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--up", type=int, default=4)
    parser.add_argument("--down", type=int, default=2)
    parser.add_argument("--rate", type=float, default=250.0)
    args = parser.parse_args()
    problem = docker_daemon_problem()
    tool = compose_tool()
    if problem or tool is None:
        print(problem or "no compose tool", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as workdir:
        stack_up = running_stack(Path(workdir), tool, replicas=args.down)
        with stack_up as stack:
            return soak(stack, args.cycles, args.up, args.down, args.rate)


if __name__ == "__main__":
    sys.exit(main())
