"""The version of saereg, in one place (pyproject.toml states it again for packaging)."""

__version__ = "0.1.0"
