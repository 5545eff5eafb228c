"""The Textual terminal UI of minicloud."""
