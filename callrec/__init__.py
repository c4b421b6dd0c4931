"""callrec: a recording archive for a clinic's telephone service."""

__version__ = "0.1.0"
