"""The built-in default guest: Debian's cloud kernel and a busybox initramfs, built and cached on demand.

``aovisor image build`` (:mod:`aovisor.image.cli`) or :func:`aovisor.image.builder.build_guest_image` from
Python.  Nothing here is imported by the VMM itself: booting a kernel never pays for building one.
"""
