"""A minimal ELF reader: the file header, program headers and note sections, nothing else.

Why not pyelftools here: importing it costs ~100 ms, twice QEMU's whole start-to-exit time for a small guest,
and the loader needs only a few fixed-layout headers (System V gABI, "ELF Header", "Program Header",
"Section Header").  The tests cross-check this reader against pyelftools on real kernels.
Every offset and count read from the file is checked against the file size before use.
"""

from __future__ import annotations

import os
import struct

from aovisor.errors import LoaderError
from aovisor.lean_typing import NamedTuple

ELF_MAGIC = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB = 1
ET_EXEC = 2
EM_386, EM_X86_64 = 3, 62
PT_LOAD, PT_NOTE = 1, 4
SHT_NOTE = 7
_MAX_HEADERS = 4096  # far more than any kernel has; bounds the work a hostile file can cause

_ET_NAMES = {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}


class ProgramHeader(NamedTuple):
    number: int
    type: int
    offset: int
    paddr: int
    filesz: int
    memsz: int
    align: int


class NoteSection(NamedTuple):
    offset: int
    size: int
    align: int


class ElfFile(NamedTuple):
    program_headers: list[ProgramHeader]
    note_sections: list[NoteSection]


def _pread(fd: int, size: int, offset: int, file_size: int, path: str, what: str) -> bytes:
    if offset < 0 or size < 0 or offset + size > file_size:
        raise LoaderError(f"{path}: file is truncated: the {what} ends past the end of the file")
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise LoaderError(f"{path}: short read of the {what}")
    return data


def read_elf(fd: int, path: str) -> ElfFile:
    """Parse an x86 executable ELF file's program headers and note sections."""
    file_size = os.fstat(fd).st_size
    ident = _pread(fd, 16, 0, file_size, path, "ELF identification")
    if ident[:4] != ELF_MAGIC:
        raise LoaderError(f"{path}: not an ELF file")
    elf_class, data = ident[4], ident[5]
    if elf_class not in (ELFCLASS32, ELFCLASS64):
        raise LoaderError(f"{path}: malformed ELF file: unknown ELF class {elf_class}")
    if data != ELFDATA2LSB:
        raise LoaderError(f"{path}: ELF file is big-endian, not x86")
    is64 = elf_class == ELFCLASS64
    # e_type, e_machine, e_version, e_entry, e_phoff, e_shoff, e_flags, e_ehsize, e_phentsize, e_phnum,
    # e_shentsize, e_shnum, e_shstrndx
    fmt = "<HHIQQQIHHHHHH" if is64 else "<HHIIIIIHHHHHH"
    header = _pread(fd, struct.calcsize(fmt), 16, file_size, path, "ELF header")
    fields = struct.unpack(fmt, header)
    e_type, machine, phoff, shoff = fields[0], fields[1], fields[4], fields[5]
    phentsize, phnum, shentsize, shnum = fields[8], fields[9], fields[10], fields[11]
    if machine not in (EM_X86_64, EM_386):
        raise LoaderError(f"{path}: ELF file is for machine {machine}, not x86")
    if e_type != ET_EXEC:
        name = _ET_NAMES.get(e_type, str(e_type))
        raise LoaderError(f"{path}: ELF file is of type {name}, not an executable (ET_EXEC)")
    return ElfFile(
        _program_headers(fd, path, file_size, is64, phoff, phentsize, phnum),
        _note_sections(fd, path, file_size, is64, shoff, shentsize, shnum),
    )


def _program_headers(
    fd: int, path: str, file_size: int, is64: bool, phoff: int, phentsize: int, phnum: int
) -> list[ProgramHeader]:
    # 64: p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
    # 32: p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags, p_align
    fmt = "<IIQQQQQQ" if is64 else "<IIIIIIII"
    size = struct.calcsize(fmt)
    if phnum == 0:
        return []
    if phentsize < size or phnum > _MAX_HEADERS:
        raise LoaderError(f"{path}: malformed ELF file: bad program headers ({phnum} x {phentsize} bytes)")
    table = _pread(fd, phentsize * phnum, phoff, file_size, path, "program header table")
    headers = []
    for i in range(phnum):
        f = struct.unpack_from(fmt, table, i * phentsize)
        if is64:
            p_type, _, offset, _, paddr, filesz, memsz, align = f
        else:
            p_type, offset, _, paddr, filesz, memsz, _, align = f
        headers.append(ProgramHeader(i, p_type, offset, paddr, filesz, memsz, align))
    return headers


def _note_sections(
    fd: int, path: str, file_size: int, is64: bool, shoff: int, shentsize: int, shnum: int
) -> list[NoteSection]:
    # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info, sh_addralign, sh_entsize
    fmt = "<IIQQQQIIQQ" if is64 else "<IIIIIIIIII"
    size = struct.calcsize(fmt)
    if shoff == 0 or shnum == 0:
        return []
    if shentsize < size or shnum > _MAX_HEADERS * 16:
        raise LoaderError(f"{path}: malformed ELF file: bad section headers ({shnum} x {shentsize} bytes)")
    table = _pread(fd, shentsize * shnum, shoff, file_size, path, "section header table")
    notes = []
    for i in range(shnum):
        _, sh_type, _, _, offset, sh_size, _, _, align, _ = struct.unpack_from(fmt, table, i * shentsize)
        if sh_type == SHT_NOTE:
            notes.append(NoteSection(offset, sh_size, align))
    return notes
