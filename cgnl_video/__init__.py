"""cgnl_video: Compact Generalized Non-local (CGNL) networks for video action recognition."""

__version__ = "0.1.0"
