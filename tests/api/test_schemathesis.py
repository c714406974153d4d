"""schemathesis against our OpenAPI document and the live server, with a bounded number of examples: no 5xx,
every response as documented (status, content type, schema), and the server still answers afterwards.

schemathesis speaks TCP; the API is a Unix socket, so a small loopback forwarder sits in between.
``vmm.shutdown`` is left out: it would end the server under test (test_api_lifecycle covers it).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from api.helpers import (
    OPENAPI,
    ApiVmm,
    api_vmm_fixture,  # noqa: F401  (the api_vmm fixture)
)

MAX_EXAMPLES = 20


@contextmanager
def _tcp_to_unix(unix_path: Path) -> Iterator[int]:
    """Forward 127.0.0.1:<port> to the Unix socket; yields the port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(str(unix_path))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_schemathesis_finds_no_server_errors(api_vmm: ApiVmm, tmp_path: Path) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    if st is None:
        pytest.fail("schemathesis is not installed (pip install schemathesis==4.32.5)")
    checks = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
    with _tcp_to_unix(api_vmm.socket) as port:
        result = subprocess.run(
            [st, "run", str(OPENAPI), "--url", f"http://127.0.0.1:{port}/api/v1", "--checks", checks,
             "--max-examples", str(MAX_EXAMPLES), "--exclude-path", "/vmm.shutdown", "--seed", "1",
             "--phases", "examples,coverage,fuzzing,stateful", "--request-timeout", "30", "--workers", "1",
             "--generation-database", "none"],
            capture_output=True, text=True, timeout=900, cwd=tmp_path, check=False,
        )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert api_vmm.proc.poll() is None, "the VMM died under schemathesis"
    assert api_vmm.call("GET", "vmm.ping").status == 200
