"""Kernel modules from an unpacked Debian kernel package: lookup, dependency order, decompression.

Debian ships modules as ``.ko.xz``; busybox ``insmod`` hands the file to ``init_module(2)``, which cannot take
a compressed image, so they are decompressed at build time.  The package has no ``modules.dep`` (depmod runs
at install time), so dependencies come from each module's ``.modinfo`` section, the ``depends=`` string.
"""

from __future__ import annotations

import lzma
from dataclasses import dataclass
from pathlib import Path

from aovisor.image.errors import ImageBuildError


@dataclass(frozen=True)
class KernelModule:
    """One decompressed module: its canonical name (underscores), path below ``kernel/``, and ELF image."""

    name: str
    relative_path: str
    image: bytes
    depends: tuple[str, ...]


def canonical_module_name(name: str) -> str:
    """The kernel treats ``-`` and ``_`` in module names alike; the canonical spelling uses ``_``."""
    return name.replace("-", "_")


class ModuleTree:
    """The modules below ``lib/modules/<release>/kernel`` of an unpacked kernel package."""

    def __init__(self, modules_dir: Path) -> None:
        self._root = modules_dir
        self._paths: dict[str, Path] = {}
        for path in sorted(modules_dir.rglob("*.ko*")):
            stem = path.name.split(".ko", 1)[0]
            self._paths[canonical_module_name(stem)] = path

    def __contains__(self, name: str) -> bool:
        return canonical_module_name(name) in self._paths

    def load(self, name: str) -> KernelModule:
        canonical = canonical_module_name(name)
        path = self._paths.get(canonical)
        if path is None:
            raise ImageBuildError(f"kernel module {name!r} is not in {self._root} (is it built in?)")
        raw = path.read_bytes()
        image = lzma.decompress(raw) if path.name.endswith(".xz") else raw
        relative = path.relative_to(self._root).as_posix().removesuffix(".xz")
        return KernelModule(canonical, relative, image, _modinfo_depends(image))

    def with_dependencies(self, names: list[str]) -> list[KernelModule]:
        """``names`` and everything they depend on, each module after its dependencies."""
        ordered: list[KernelModule] = []
        done: set[str] = set()
        visiting: set[str] = set()

        def visit(name: str) -> None:
            canonical = canonical_module_name(name)
            if canonical in done:
                return
            if canonical in visiting:
                raise ImageBuildError(f"kernel module dependency cycle through {canonical}")
            visiting.add(canonical)
            module = self.load(canonical)
            for dependency in module.depends:
                visit(dependency)
            visiting.discard(canonical)
            done.add(canonical)
            ordered.append(module)

        for name in names:
            visit(name)
        return ordered


def _modinfo_depends(image: bytes) -> tuple[str, ...]:
    # .modinfo is a run of NUL-terminated "key=value" strings; "depends=" appears once per module.
    # Searching the whole image is enough: the key is preceded by a NUL in the section.
    marker = b"\0depends="
    start = image.find(marker)
    if start < 0:
        return ()
    start += len(marker)
    end = image.find(b"\0", start)
    value = image[start:end].decode("ascii", "replace")
    return tuple(canonical_module_name(dep) for dep in value.split(",") if dep)
