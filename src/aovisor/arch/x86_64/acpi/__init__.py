"""ACPI tables for the x86-64 guest: a hardware-reduced ACPI platform (RSDP, XSDT, FADT, MADT, DSDT)."""

from aovisor.arch.x86_64.acpi.builder import AcpiBlob, AcpiConfig, build_acpi

__all__ = ["AcpiBlob", "AcpiConfig", "build_acpi"]
