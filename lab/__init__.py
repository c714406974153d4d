"""The nested hardware-virtualization lab: real Linux guests for aovisor on a machine whose /dev/kvm can't.

QEMU in software emulation (`-accel tcg -cpu max`, which emulates AMD SVM with nested paging) boots a Debian
"L2" whose kvm_amd gives a real /dev/kvm; aovisor runs inside L2 and boots an "L3" Linux. See README.md.
"""

from lab.builder import LabArtifacts, build, cache_root
from lab.errors import LabBuildError, LabError, LabRunError
from lab.runner import LabResult, run, shell

__all__ = [
    "LabArtifacts",
    "LabBuildError",
    "LabError",
    "LabResult",
    "LabRunError",
    "build",
    "cache_root",
    "run",
    "shell",
]
