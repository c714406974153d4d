"""A real Linux kernel for tests: Debian's cloud kernel of the default guest image (``aovisor.image``).

``debian_cloud_kernel()`` returns its ``vmlinuz`` (a bzImage), ``extract_vmlinux(bzimage)`` the ELF
``vmlinux`` inside a bzImage (for the image's own kernel, the one the image build already unpacked).  Both
build the image on first use (cached in ``~/.cache/aovisor/images/``).  Failures raise ``KernelCacheError``
with a message that says what to do; tests turn it into a failure, never a skip.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from aovisor.image.builder import GuestImage, build_guest_image
from aovisor.image.errors import ImageBuildError
from aovisor.image.vmlinux import extract_vmlinux_file

KernelCacheError = ImageBuildError


@functools.cache
def _image() -> GuestImage:
    return build_guest_image()


def debian_cloud_kernel() -> Path:
    """Path of the Debian cloud-amd64 ``vmlinuz``, downloaded and cached on first use."""
    return _image().vmlinuz


def extract_vmlinux(bzimage: Path) -> Path:
    """The ELF ``vmlinux`` inside ``bzimage`` (another bzImage's is unpacked beside it, once)."""
    image = _image()
    if bzimage == image.vmlinuz:
        return image.vmlinux
    out = bzimage.with_name(bzimage.name + ".vmlinux")
    if not out.exists():
        temporary = out.with_name(f".{out.name}.{os.getpid()}")
        extract_vmlinux_file(bzimage, temporary)
        os.replace(temporary, out)
    return out
