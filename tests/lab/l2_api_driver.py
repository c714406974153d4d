"""Runs inside L2: drives a running aovisor through its REST API as a user would, on the guest's cue.

    python3 l2_api_driver.py SOCKET MARKER ACTION[,ACTION...] -- AOVISOR-ARGV...

Starts ``AOVISOR-ARGV`` (which must include ``--api-socket path=SOCKET`` and a payload, so that it boots at
once), copies its stdout to ours line by line, and each time a line contains ``MARKER`` (the guest's
readiness marker) sends the next ``ACTION`` (an API endpoint such as ``vm.reboot``) as ``PUT``, printing
``api: <endpoint> -> <status>``.  Ends with ``api: aovisor exit status N`` and that status.  aovisor's
stderr goes to ours.  Needs aovisor's API client (``PYTHONPATH=/work/src``) and h11 (L2's python3-h11).
"""

from __future__ import annotations

import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) < 5 or argv[3] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    socket_path, marker, actions = argv[0], argv[1], argv[2].split(",")
    from aovisor.api.client import ApiClient

    process = subprocess.Popen(argv[4:], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert process.stdout is not None
    pending = list(actions)
    for raw in iter(process.stdout.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        print(line, flush=True)
        if marker in line and pending:
            endpoint = pending.pop(0)
            with ApiClient(socket_path, timeout=30) as client:
                started = time.monotonic()
                response = client.request("PUT", endpoint)
            took = time.monotonic() - started
            print(f"api: {endpoint} -> {response.status} ({took:.2f} s)", flush=True)
    status = process.wait()
    print(f"api: aovisor exit status {status}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
