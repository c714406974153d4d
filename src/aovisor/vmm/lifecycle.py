"""The VM lifecycle: its states, which action is allowed in which state, and the errors for the rest.

::

    (no VM) --create--> Created --boot--> Running <--pause/resume--> Paused
                                    ^        |                         |
                                    |        +--shutdown--> Shutdown <-+
                                    +------------boot----------+

``delete`` drops the VM from any state (shutting it down first); the names and values are Cloud
Hypervisor's ``VmState`` (``vm.info``'s ``state``).  Unlike Cloud Hypervisor, which reports a shut-down VM as
``Created`` again, we report ``Shutdown`` until it is booted again or deleted: it is what happened.

The errors carry what the REST layer needs to choose a status: no VM at all is 404 (Cloud Hypervisor's
``VmNotCreated``), an action the current state does not allow is 405 (the OpenAPI document's "not booted"
answers), a duplicate device is 409.
"""

from __future__ import annotations

import enum

from aovisor.errors import AovisorError


class VmState(enum.Enum):
    CREATED = "Created"
    RUNNING = "Running"
    PAUSED = "Paused"
    SHUTDOWN = "Shutdown"


class VmNotCreatedError(AovisorError):
    """There is no VM: ``vm.create`` (or a payload on the command line) comes first."""

    def __init__(self, action: str) -> None:
        super().__init__(f"cannot {action}: no VM has been created (vm.create first)")
        self.action = action


class InvalidStateError(AovisorError):
    """The action is not allowed in the VM's current state."""

    def __init__(self, action: str, state: VmState, allowed: frozenset[VmState]) -> None:
        wanted = " or ".join(sorted(s.value for s in allowed))
        super().__init__(f"cannot {action}: the VM is {state.value} (it must be {wanted})")
        self.action = action
        self.state = state


class VmAlreadyCreatedError(AovisorError):
    """``vm.create`` while a VM exists: ``vm.delete`` it first."""

    def __init__(self, state: VmState) -> None:
        super().__init__(f"cannot create: a VM already exists (it is {state.value}; vm.delete it first)")
        self.state = state


class ConflictError(AovisorError):
    """A device with the same identifier (or a second vsock device) already exists."""


# action -> (states it is allowed in, state it leads to or None for "unchanged")
TRANSITIONS: dict[str, tuple[frozenset[VmState], VmState | None]] = {
    "boot": (frozenset({VmState.CREATED, VmState.SHUTDOWN}), VmState.RUNNING),
    "pause": (frozenset({VmState.RUNNING}), VmState.PAUSED),
    "resume": (frozenset({VmState.PAUSED}), VmState.RUNNING),
    "shut down": (frozenset({VmState.RUNNING, VmState.PAUSED}), VmState.SHUTDOWN),
    "reboot": (frozenset({VmState.RUNNING, VmState.PAUSED}), VmState.RUNNING),
    "press the power button": (frozenset({VmState.RUNNING}), None),
    "read counters": (frozenset({VmState.RUNNING, VmState.PAUSED}), None),
    # Cold plug only: hot plug needs PCI hotplug, which does not exist yet.
    "add a device (hot plug is not yet supported: add devices before vm.boot)": (
        frozenset({VmState.CREATED, VmState.SHUTDOWN}),
        None,
    ),
}
ADD_DEVICE = "add a device (hot plug is not yet supported: add devices before vm.boot)"


class Lifecycle:
    """The current state (``None``: no VM) and the one place transitions are checked."""

    def __init__(self) -> None:
        self.state: VmState | None = None

    def check(self, action: str) -> VmState | None:
        """The state ``action`` leads to; raises if it is not allowed now (nothing changes)."""
        allowed, target = TRANSITIONS[action]
        if self.state is None:
            raise VmNotCreatedError(action)
        if self.state not in allowed:
            raise InvalidStateError(action, self.state, allowed)
        return target

    def require_vm(self, action: str) -> VmState:
        if self.state is None:
            raise VmNotCreatedError(action)
        return self.state
