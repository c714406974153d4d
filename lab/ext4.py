"""ext4 disk images: made on the host with `mkfs.ext4 -d`, read back with `debugfs` (no mounting, no root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from aovisor.image.tools import run_tool
from lab.errors import LabBuildError

MIN_IMAGE_BYTES = 16 * 2**20


def make_ext4(image: Path, size_bytes: int, *, source: Path | None = None, label: str = "") -> None:
    """Create a sparse ext4 image of `size_bytes`, filled from the directory `source` if given."""
    with image.open("wb") as handle:
        handle.truncate(max(size_bytes, MIN_IMAGE_BYTES))
    # No journal: the images are scratch or copy-on-write, and creating a journal costs time.
    command = ["mkfs.ext4", "-F", "-q", "-O", "^has_journal", "-E", "root_owner=0:0"]
    if label:
        command += ["-L", label]
    if source is not None:
        command += ["-d", str(source)]
    run_tool([*command, str(image)], error=LabBuildError)


def read_file(image: Path, path: str) -> bytes | None:
    """The contents of `path` in the image, or None if it is not there."""
    completed = subprocess.run(["debugfs", "-R", f"cat {path}", str(image)], capture_output=True, check=False)
    # debugfs exits 0 for a missing file too; it then says so on stderr and prints nothing.
    if completed.returncode != 0 or b"File not found" in completed.stderr:
        return None
    return completed.stdout


def copy_directory_out(image: Path, path: str, destination: Path) -> None:
    """Copy the directory `path` of the image (its contents, recursively) into `destination`."""
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination, prefix=".dump-") as dump_name:
        subprocess.run(
            ["debugfs", "-R", f"rdump {path} {dump_name}", str(image)], capture_output=True, check=False
        )
        dumped = Path(dump_name) / Path(path).name
        if not dumped.is_dir():
            return
        for entry in dumped.iterdir():
            target = destination / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(entry, target)


def tree_bytes(root: Path) -> int:
    """Total size of the regular files below `root` (the content an image must hold)."""
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            total += os.lstat(os.path.join(directory, name)).st_size
    return total
