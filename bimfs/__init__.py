"""bimfs: a FUSE filesystem that mounts a Bimplus account as a drive."""

__version__ = "0.1.0"
