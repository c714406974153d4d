"""``aovisor image build [--output DIR] [--force]``: build the default guest and print where its files are.

Prints one ``NAME PATH`` line each for ``vmlinuz`` (bzImage), ``vmlinux`` (PVH ELF) and ``initramfs``, then
(on stderr) how to boot it.  Exit status 0, or 1 with one ``aovisor: error:`` line when the build fails.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from aovisor.image.init_script import COMMAND_PARAMETER

PROG = "aovisor image"


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description="The built-in default guest: Debian's cloud kernel and a busybox initramfs."
    )
    commands = parser.add_subparsers(dest="action", required=True, metavar="build")
    build = commands.add_parser(
        "build", help="build (or find in the cache) the default guest image and print its files"
    )
    build.add_argument("--output", type=Path, metavar="DIR", help="also copy the files into DIR")
    build.add_argument("--force", action="store_true", help="rebuild even when a cached image matches")
    args = parser.parse_args(list(argv))

    from aovisor.image.builder import build_guest_image
    from aovisor.image.errors import ImageBuildError

    try:
        image = build_guest_image(force=args.force)
        if args.output is not None:
            image = image.export(args.output)
    except (ImageBuildError, OSError) as e:
        message = " ".join(str(e).split())
        print(f"aovisor: error: {message}", file=sys.stderr)
        return 1
    print(f"vmlinuz {image.vmlinuz}")
    print(f"vmlinux {image.vmlinux}")
    print(f"initramfs {image.initramfs}")
    print(
        f"boot it: aovisor --kernel {image.vmlinuz} --initramfs {image.initramfs} "
        f"--cmdline 'console=ttyS0 quiet {COMMAND_PARAMETER}=\"uname -a\"' --serial tty",
        file=sys.stderr,
    )
    return 0
