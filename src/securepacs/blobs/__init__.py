"""Blob stores: where each instance's original Part 10 bytes live (filesystem by default)."""
