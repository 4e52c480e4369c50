"""Helpers shared by the test suites (the emulator process, ...)."""
