"""Errors a user can act on: the CLI prints them as one line, never a traceback."""


class AovisorError(Exception):
    """A user-facing error (bad option, missing file, no /dev/kvm...)."""


class ConfigError(AovisorError):
    """A bad CLI/API/config value; the message names the option and key."""


class GuestMemoryError(Exception):
    """A guest-physical access outside guest RAM (a guest or device bug, never a host access)."""


class LoaderError(AovisorError):
    """A kernel or initramfs image that cannot be loaded; the message names the file."""


class HypervisorError(AovisorError):
    """The hypervisor refused an operation."""
