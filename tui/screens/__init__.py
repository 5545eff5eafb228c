"""Screens of the minicloud terminal UI."""
