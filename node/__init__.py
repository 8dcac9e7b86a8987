"""perpchain: node software of an application-specific perpetual-futures exchange chain."""

__version__ = "0.1.0"
