"""The package's version, in one place (what config.json and the sidecars record)."""

__version__ = "0.1.0"
