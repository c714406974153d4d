"""What a broken or hostile client gets: 4xx answers with a JSON error body (checked against our OpenAPI
document), never a crash, never a hung connection; the server still answers afterwards."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from aovisor.api.client import ApiClient
from api.helpers import (
    ApiVmm,
    api_vmm_fixture,  # noqa: F401  (the api_vmm fixture)
    check_response,
)

KERNEL_CONFIG = {"payload": {"kernel": "/nonexistent/vmlinux"}}


def _body(extra: dict[str, object]) -> bytes:
    """A vm.create body with a readable kernel and ``extra``."""
    return json.dumps({"payload": {"kernel": "/dev/null"}, **extra}).encode()


def _raw_exchange(vmm: ApiVmm, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes, then read until the server closes or answers one response (no hang: timeout)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(vmm.socket))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "malformed JSON"),
        (b"[1, 2]", 400, "expected an object"),
        (b"\xff\xfe", 400, "malformed JSON"),
        (b"[" * 100_000, 400, "malformed JSON"),
        (json.dumps({"payload": {"kernel": "/x"}, "bogus": 1}).encode(), 400, "bogus: unknown field"),
        (json.dumps({"payload": {}}).encode(), 400, "payload.kernel: is required"),
        (json.dumps({"payload": {"kernel": "/nonexistent/k"}}).encode(), 400, "cannot read"),
        (json.dumps({"payload": {"kernel": "/"}}).encode(), 400, "is a directory"),
        (_body({"memory": {"size": "1G"}}), 400, "memory.size"),
        (_body({"memory": {"size": 1 << 62}}), 400, "RAM"),
        (_body({"memory": {"size": True}}), 400, "integer"),
        (_body({"memory": {"size": 1 << 30, "shared": True}}), 400, "memory.shared: true is not yet"),
        (_body({"cpus": {"boot_vcpus": 2, "max_vcpus": 4}}), 400, "hotplug"),
        (_body({"console": {"mode": "Pty"}}), 400, "console"),
    ],
)
def test_bad_vm_create_bodies_are_400_with_the_field_named(
    api_vmm: ApiVmm, body: bytes, status: int, needle: str
) -> None:
    response = api_vmm.call("PUT", "vm.create", raw=body)
    assert response.status == status
    assert needle in response.json()[-1], response.json()
    assert api_vmm.call("GET", "vm.info").status == 404  # nothing was created


def test_wrong_methods_unknown_paths_and_stray_bodies(api_vmm: ApiVmm) -> None:
    response = api_vmm.call("POST", "vm.boot")
    assert response.status == 405 and response.headers["allow"] == "PUT"
    assert api_vmm.call("GET", "vm.pause").status == 405
    assert api_vmm.call("DELETE", "vmm.ping").status == 405
    assert api_vmm.call("GET", "vm.nosuch").status == 404
    assert api_vmm.call("PUT", "vm.snapshot", {"destination_url": "file:///tmp"}).status == 501
    assert api_vmm.call("PUT", "vm.boot", {"unexpected": "body"}).status == 400  # as in CH
    assert api_vmm.call("PUT", "vm.create").status == 400  # a body is required
    with ApiClient(str(api_vmm.socket)) as client:
        assert client.request("GET", "../../etc/passwd").status == 404


def test_oversized_body_is_refused_without_reading_it(api_vmm: ApiVmm) -> None:
    header = b"PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n"
    answer = _raw_exchange(api_vmm, header + b"{" * 1000)
    assert answer.startswith(b"HTTP/1.1 413 ")
    # The chunked form has no length up front: it is cut off once over the limit.
    with ApiClient(str(api_vmm.socket)) as client:
        response = client.request("PUT", "vm.create", raw=b" " * (5 << 20))
    assert response.status == 413
    check_response("PUT", "vm.create", response)


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x01\x02 nonsense\r\n\r\n",
        b"GET /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"GET /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET /api/v1/vmm.ping HTTP/1.1\r\n" + b"X-Long: " + b"a" * 100_000 + b"\r\n\r\n",
        b"GET /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\n",  # cut off mid-headers: the peer closed
        b"",
    ],
)
def test_malformed_http_gets_an_answer_or_a_close_never_a_hang(api_vmm: ApiVmm, garbage: bytes) -> None:
    answer = _raw_exchange(api_vmm, garbage)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:200]
    assert api_vmm.call("GET", "vmm.ping").status == 200  # the server lives on


def test_keep_alive_many_requests_on_one_connection(api_vmm: ApiVmm) -> None:
    with ApiClient(str(api_vmm.socket)) as client:
        for _ in range(50):
            response = client.request("GET", "vmm.ping")
            assert response.status == 200
        assert client.request("PUT", "vm.boot").status == 404
        assert client.request("GET", "vmm.ping").status == 200


def test_expect_100_continue_is_answered(api_vmm: ApiVmm) -> None:
    body = json.dumps(KERNEL_CONFIG).encode()
    request = (
        b"PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(api_vmm.socket))
        s.sendall(request)
        assert s.recv(4096).startswith(b"HTTP/1.1 100 ")
        s.sendall(body)
        assert s.recv(4096).startswith(b"HTTP/1.1 400 ")  # the kernel path does not exist


def test_api_socket_is_private_and_a_second_vmm_cannot_take_it(api_vmm: ApiVmm, tmp_path: Path) -> None:
    assert api_vmm.socket.stat().st_mode & 0o777 == 0o600
    other = subprocess.run(
        [sys.executable, "-m", "aovisor", "--api-socket", f"path={api_vmm.socket}"],
        capture_output=True, stdin=subprocess.DEVNULL, timeout=30, check=False,
    )  # fmt: skip
    assert other.returncode != 0 and b"in use" in other.stderr
    assert api_vmm.call("GET", "vmm.ping").status == 200
