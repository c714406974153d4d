"""Errors raised by the nested lab."""


class LabError(Exception):
    """Base class for every lab failure."""


class LabBuildError(LabError):
    """The lab images could not be built; the message says what to install or fix."""


class LabRunError(LabError):
    """L2 could not be started or its results could not be read back."""
