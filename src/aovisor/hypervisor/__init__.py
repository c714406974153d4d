"""Hypervisor backends behind one interface (see :mod:`aovisor.hypervisor.base`)."""
