"""slidestream: low-magnification slide storage with on-demand super-resolution."""

__version__ = "0.1.0"
