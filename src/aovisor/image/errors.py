"""The error of the image builder."""

from aovisor.errors import AovisorError


class ImageBuildError(AovisorError):
    """The guest image could not be built; the message says what to install or do."""
