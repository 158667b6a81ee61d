"""Test fixtures shared by tests/, fuzzers and measurement scripts (no downloads)."""
