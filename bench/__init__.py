"""Side-by-side benchmarks of aovisor against QEMU (``make bench``; see bench/README.md)."""
