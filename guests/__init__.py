"""Freestanding guest programs for testing aovisor, and their builder (guests/build.py)."""
