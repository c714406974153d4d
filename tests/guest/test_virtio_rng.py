"""Boot the virtio_rng guest: the virtio-rng device (CH's --rng, on by default) serves random bytes."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import run_aovisor

Guest = Callable[[str], Path]


@pytest.mark.parametrize("rng_args", [[], ["--rng", "src=/dev/urandom"]])
def test_guest_reads_random_bytes(hypervisor: str, guest: Guest, rng_args: list[str]) -> None:
    proc = run_aovisor(
        ["--hypervisor", hypervisor, "--kernel", str(guest("virtio_rng")), "--memory", "size=64M",
         "--cmdline", "bytes=16384", *rng_args]
    )  # fmt: skip
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()
    assert out.startswith("virtio-rng: read 16384 bytes in 4 requests\n"), out
    distinct = int(re.search(r"distinct byte values (\d+)", out).group(1))  # type: ignore[union-attr]
    ones = int(re.search(r"ones (\d+) of 131072 bits", out).group(1))  # type: ignore[union-attr]
    assert distinct >= 250  # 16 KiB of uniform bytes miss a value with probability ~1e-25
    assert abs(ones - 65536) < 2000  # ~11 standard deviations
    assert out.endswith("virtio-rng: first and second half differ\nvirtio-rng done\n")


def test_constant_source_is_visible_to_the_guest(hypervisor: str, guest: Guest) -> None:
    """With src=/dev/zero the guest sees exactly what the source gives: the bytes come from --rng's src."""
    proc = run_aovisor(
        ["--hypervisor", hypervisor, "--kernel", str(guest("virtio_rng")), "--memory", "size=64M",
         "--cmdline", "bytes=4096", "--rng", "src=/dev/zero"]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode() == (
        "virtio-rng: read 4096 bytes in 1 requests\nvirtio-rng: distinct byte values 1\n"
        "virtio-rng: ones 0 of 32768 bits\nvirtio-rng: first and second half are equal\nvirtio-rng done\n"
    )
