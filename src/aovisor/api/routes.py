"""The REST endpoints (base path ``/api/v1``): HTTP request -> VMM operation on the control thread -> HTTP
response, with Cloud Hypervisor's paths, methods, status codes and error bodies.

Error bodies are, as in Cloud Hypervisor, a JSON array of strings: the error and its causes, outermost
first (``["The VM could not be paused", "cannot pause: the VM is Created (it must be Running)"]``).

Statuses: 200 with a JSON body, 204 without; 400 a malformed or unsupported request (bad JSON, unknown or
not-yet-supported field, a body where none is allowed, a kernel that cannot be loaded); 404 no VM (or no
such endpoint); 405 the VM's state does not allow it, or a method the endpoint does not take (with
``Allow``); 409 a duplicate device; 413 a body over the limit; 500 the host failed (the hypervisor refused
something); 501 a Cloud Hypervisor endpoint aovisor does not implement; 503 the VMM is shutting down.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aovisor.errors import AovisorError, ConfigError
from aovisor.logs import get_logger
from aovisor.vmm.controller import VmmShutDownError
from aovisor.vmm.lifecycle import ConflictError, InvalidStateError, VmAlreadyCreatedError, VmNotCreatedError

if TYPE_CHECKING:
    from aovisor.vmm.vmm import Vmm

log = get_logger(__name__)

API_ROOT = "/api/v1"


@dataclass
class Response:
    status: int
    body: bytes | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_response(status: int, value: Any) -> Response:
    return Response(status, json.dumps(value).encode())


def error_response(status: int, *messages: str) -> Response:
    return json_response(status, [" ".join(m.split()) for m in messages])


@dataclass(frozen=True)
class Request:
    vmm: Vmm
    body: bytes
    fds: list[int]
    kept: set[int]  # fds the handler took ownership of (the server closes the others)

    def json(self) -> Any:
        from aovisor.api.vm_config import parse_json_body

        return parse_json_body(self.body)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a VMM operation on the control thread."""
        return self.vmm.controller.call(fn, *args)


Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class Endpoint:
    method: str
    handler: Handler
    failure: str  # Cloud Hypervisor's top-level error message for this operation
    body: bool = False  # True: a JSON body is required; False: a body is refused (400), as in CH


# --- handlers -----------------------------------------------------------------------------------------------
def _ping(req: Request) -> Response:
    return json_response(200, req.call(req.vmm.ping))


def _vmm_shutdown(req: Request) -> Response:
    req.call(req.vmm.shutdown_vmm)
    return Response(204)


def _create(req: Request) -> Response:
    from aovisor.api.vm_config import definition_from_json

    definition = definition_from_json(req.json())  # validated here, off the control thread
    req.call(req.vmm.create, definition)
    return Response(204)


def _action(name: str) -> Handler:
    def handle(req: Request) -> Response:
        req.call(getattr(req.vmm, name))
        return Response(204)

    return handle


def _info(req: Request) -> Response:
    return json_response(200, req.call(req.vmm.info))


def _counters(req: Request) -> Response:
    return json_response(200, req.call(req.vmm.counters))


def _add_disk(req: Request) -> Response:
    from aovisor.api.vm_config import disk_from_json

    disk = disk_from_json(req.json())
    req.call(req.vmm.add_disk, disk)
    return Response(204)


def _add_net(req: Request) -> Response:
    from aovisor.api.vm_config import device_from_json

    # Every fd that came with the request belongs to this device (CH's attach_fds_to_cfg): TAP queues.
    device = device_from_json("net", req.json(), fds=req.fds)
    req.call(req.vmm.add_device, device)
    req.kept.update(req.fds)  # the definition owns them now (closed at vm.delete)
    return Response(204)


def _add_vsock(req: Request) -> Response:
    from aovisor.api.vm_config import device_from_json

    req.call(req.vmm.add_device, device_from_json("vsock", req.json()))
    return Response(204)


ENDPOINTS: dict[str, Endpoint] = {
    "/vmm.ping": Endpoint("GET", _ping, "The VMM could not be pinged"),
    "/vmm.shutdown": Endpoint("PUT", _vmm_shutdown, "The VMM could not shutdown"),
    "/vm.create": Endpoint("PUT", _create, "The VM could not be created", body=True),
    "/vm.boot": Endpoint("PUT", _action("boot"), "The VM could not boot"),
    "/vm.info": Endpoint("GET", _info, "The VM info is not available"),
    "/vm.counters": Endpoint("GET", _counters, "The VM counters are not available"),
    "/vm.pause": Endpoint("PUT", _action("pause"), "The VM could not be paused"),
    "/vm.resume": Endpoint("PUT", _action("resume"), "The VM could not resume"),
    "/vm.shutdown": Endpoint("PUT", _action("shutdown"), "The VM could not shutdown"),
    "/vm.reboot": Endpoint("PUT", _action("reboot"), "The VM could not reboot"),
    "/vm.power-button": Endpoint("PUT", _action("power_button"), "The power button could not be pressed"),
    "/vm.delete": Endpoint("PUT", _action("delete"), "The VM could not be deleted"),
    "/vm.add-disk": Endpoint("PUT", _add_disk, "The disk could not be added to the VM", body=True),
    "/vm.add-net": Endpoint("PUT", _add_net, "The network device could not be added to the VM", body=True),
    "/vm.add-vsock": Endpoint("PUT", _add_vsock, "The vsock device could not be added to the VM", body=True),
}

# Cloud Hypervisor endpoints that exist there but not (yet) here: 501, not a confusing 404.
NOT_IMPLEMENTED = frozenset(
    {
        "/vm.resize",
        "/vm.resize-disk",
        "/vm.resize-zone",
        "/vm.add-device",
        "/vm.remove-device",
        "/vm.add-fs",
        "/vm.add-pmem",
        "/vm.add-vdpa",
        "/vm.add-user-device",
        "/vm.add-generic-vhost-user",
        "/vm.snapshot",
        "/vm.restore",
        "/vm.coredump",
        "/vm.nmi",
        "/vm.send-migration",
        "/vm.receive-migration",
    }
)


def status_of(error: BaseException) -> int:
    """The HTTP status for an error raised by a VMM operation or by request validation."""
    if isinstance(error, VmNotCreatedError):
        return 404
    if isinstance(error, InvalidStateError | VmAlreadyCreatedError):
        return 405
    if isinstance(error, ConflictError):
        return 409
    if isinstance(error, VmmShutDownError):
        return 503
    from aovisor.errors import LoaderError

    if isinstance(error, ConfigError | LoaderError):
        return 400
    return 500


def _path_of(target: str) -> str:
    """The path of a request target, without query or fragment (origin form; absolute form tolerated)."""
    path = target.split("?", 1)[0].split("#", 1)[0]
    if path.startswith(("http://", "https://")):
        after_scheme = path.split("//", 1)[1]
        path = "/" + after_scheme.split("/", 1)[1] if "/" in after_scheme else "/"
    return path


def dispatch(vmm: Vmm, method: str, target: str, body: bytes, fds: list[int], kept: set[int]) -> Response:
    """Answer one request; never raises (every failure becomes an error response)."""
    path = _path_of(target)
    name = path[len(API_ROOT) :] if path.startswith(API_ROOT + "/") else None
    endpoint = ENDPOINTS.get(name) if name is not None else None
    if endpoint is None:
        if name in NOT_IMPLEMENTED:
            return error_response(501, "Not Implemented", f"{API_ROOT}{name} is not yet implemented")
        return error_response(404, "Not Found", f"no endpoint {path!r} (the API is under {API_ROOT}/)")
    if method != endpoint.method:
        response = error_response(405, "Method Not Allowed", f"{path} takes {endpoint.method}, not {method}")
        response.headers.append(("Allow", endpoint.method))
        return response
    if endpoint.body and not body:
        return error_response(400, endpoint.failure, "this request needs a JSON body")
    if not endpoint.body and body:
        return error_response(400, endpoint.failure, "this request takes no body")
    try:
        return endpoint.handler(Request(vmm, body, fds, kept))
    except AovisorError as e:
        status = status_of(e)
        if status >= 500:
            log.error("API %s %s: %s", method, path, e)
        return error_response(status, endpoint.failure, str(e) or type(e).__name__)
    except OSError as e:
        log.error("API %s %s: %s", method, path, e)
        detail = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e)
        return error_response(500, endpoint.failure, detail)
    except Exception as e:
        log.exception("API %s %s: internal error", method, path)
        return error_response(500, endpoint.failure, f"internal error: {type(e).__name__}: {e}")
