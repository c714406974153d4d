"""The Debian archive this machine's apt is configured with, for debootstrap.

The repository names no mirror host: the URL comes from the apt sources (`/etc/apt/sources.list` one-line
entries and `/etc/apt/sources.list.d/*.list` / `*.sources` deb822 stanzas, see sources.list(5)).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabBuildError

APT_DIR = Path("/etc/apt")


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None


def host_codename(os_release: Path = Path("/etc/os-release")) -> str:
    """The Debian release of this machine (`VERSION_CODENAME`), e.g. "bookworm"."""
    try:
        text = os_release.read_text()
    except OSError as error:
        raise LabBuildError(f"cannot read {os_release}: the lab needs a Debian host") from error
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME" and value.strip('"'):
            return value.strip('"')
    raise LabBuildError(f"{os_release} has no VERSION_CODENAME: the lab needs a Debian host")


def configured_sources(apt_dir: Path = APT_DIR) -> list[AptSource]:
    sources: list[AptSource] = []
    one_line_files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in one_line_files:
        if path.is_file():
            sources.extend(_parse_one_line(path.read_text()))
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        sources.extend(_parse_deb822(path.read_text()))
    return sources


def debian_mirror(codename: str, apt_dir: Path = APT_DIR) -> AptSource:
    """The source serving `codename` itself with component main (not -security, not -updates)."""
    for source in configured_sources(apt_dir):
        if codename in source.suites and "main" in source.components:
            return source
    raise LabBuildError(
        f"no apt source in {apt_dir} serves '{codename} main'; configure the Debian archive for apt "
        "(debootstrap takes its mirror URL from there) and run 'apt-get update'"
    )


def _parse_one_line(text: str) -> list[AptSource]:
    sources = []
    for raw_line in text.splitlines():
        words = raw_line.split("#", 1)[0].split()
        if len(words) < 3 or words[0] != "deb":
            continue
        signed_by = None
        rest = words[1:]
        if rest[0].startswith("["):
            options = []
            while rest and not rest[0].endswith("]"):
                options.append(rest.pop(0))
            if rest:
                options.append(rest.pop(0))
            for option in " ".join(options).strip("[]").split():
                key, _, value = option.partition("=")
                if key == "signed-by":
                    signed_by = value
        if len(rest) < 2:
            continue
        sources.append(AptSource(rest[0].rstrip("/"), (rest[1],), tuple(rest[2:]), signed_by))
    return sources


def _parse_deb822(text: str) -> list[AptSource]:
    sources = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key:
                fields[key] += "\n" + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        signed_by = fields.get("signed-by")
        if signed_by is not None and not signed_by.startswith("/"):
            signed_by = None  # an inline key block; debootstrap then uses its default keyring
        for uri in fields.get("uris", "").split():
            sources.append(
                AptSource(
                    uri.rstrip("/"),
                    tuple(fields.get("suites", "").split()),
                    tuple(fields.get("components", "").split()),
                    signed_by,
                )
            )
    return sources
