"""Helpers for the API tests: a live `aovisor --api-socket` process, a client, and response validation
against our OpenAPI document (src/aovisor/api/openapi.yaml)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from aovisor.api.client import ApiClient, ApiResponse

REPO = Path(__file__).resolve().parents[2]
OPENAPI = REPO / "src" / "aovisor" / "api" / "openapi.yaml"


@cache
def openapi() -> dict[str, Any]:
    import yaml

    document: dict[str, Any] = yaml.safe_load(OPENAPI.read_text())
    return document


def check_response(method: str, endpoint: str, response: ApiResponse) -> None:
    """Fail unless ``response`` is one our OpenAPI document allows for ``method /endpoint``: a listed status,
    and a JSON body valid against its schema (none for 204).  Endpoints or methods outside the document
    must answer 404/405/501 with an error body."""
    import jsonschema_rs

    doc = openapi()
    operation = doc["paths"].get(f"/{endpoint}", {}).get(method.lower())
    if operation is None:
        assert response.status in (404, 405, 501), (method, endpoint, response.status)
        schema_ref = "#/components/schemas/ErrorBody"
    else:
        responses = operation["responses"]
        assert str(response.status) in responses, (
            f"{method} /{endpoint} answered {response.status}, not in the document: {response.body!r}"
        )
        spec = responses[str(response.status)]
        if "$ref" in spec:
            spec = doc["components"]["responses"][spec["$ref"].rsplit("/", 1)[1]]
        content = spec.get("content")
        if content is None:
            assert response.body == b"", (method, endpoint, response.body)
            return
        schema_ref = content["application/json"]["schema"]["$ref"]
    assert response.headers.get("content-type") == "application/json"
    validator = jsonschema_rs.validator_for({"$ref": schema_ref, "components": doc["components"]})
    errors = [str(e) for e in validator.iter_errors(response.json())]
    assert not errors, f"{method} /{endpoint} -> {response.status}: {errors}; body {response.body!r}"


@dataclass
class ApiVmm:
    """A running `aovisor --api-socket` process."""

    proc: subprocess.Popen[bytes]
    socket: Path
    events: Path
    workdir: Path
    clients: list[ApiClient] = field(default_factory=list)

    def client(self) -> ApiClient:
        client = ApiClient(str(self.socket), timeout=30)
        self.clients.append(client)
        return client

    def call(self, method: str, endpoint: str, body: Any = None, **kwargs: Any) -> ApiResponse:
        """One request on a fresh connection, validated against the OpenAPI document."""
        with ApiClient(str(self.socket), timeout=30) as client:
            response = client.request(method, endpoint, body, **kwargs)
        check_response(method, endpoint, response)
        return response

    def event_names(self) -> list[str]:
        import json

        chunks = self.events.read_text().split("\n\n")
        return [f"{e['source']}:{e['event']}" for e in (json.loads(c) for c in chunks if c.strip())]

    def wait_exit(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)


def start_api_vmm(workdir: Path, *extra: str) -> ApiVmm:
    sock = workdir / "api.sock"
    events = workdir / "events.json"
    with open(workdir / "stdout", "wb") as out, open(workdir / "stderr", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aovisor", "--api-socket", f"path={sock}", "--event-monitor",
             f"path={events}", "--hypervisor", "kvm", *extra],
            stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=workdir,
        )  # fmt: skip
    deadline = time.monotonic() + 20
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the API socket did not appear: {(workdir / 'stderr').read_text()}")
        time.sleep(0.02)
    return ApiVmm(proc, sock, events, workdir)


@pytest.fixture(name="api_vmm")
def api_vmm_fixture(tmp_path: Path) -> Iterator[ApiVmm]:
    """A running `aovisor --api-socket` (killed at the end if still running)."""
    if not os.path.exists("/dev/kvm"):
        pytest.fail("/dev/kvm does not exist: the API tests boot guests on KVM")
    vmm = start_api_vmm(tmp_path)
    try:
        yield vmm
    finally:
        for client in vmm.clients:
            client.close()
        if vmm.proc.poll() is None:
            vmm.proc.kill()
        vmm.proc.wait(10)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
