"""Widgets of the minicloud terminal UI, one a module."""
