"""Files given as URLs: an http(s) checkpoint or weights file is downloaded once into
iopath's cache and read from there (iopath's PathManager, the file layer of fvcore and
detectron2). The cache is $FVCORE_CACHE, by default ~/.torch/iopath_cache, laid out by
the URL's path; a second read of the same URL downloads nothing.
"""

from urllib.parse import urlparse

URL_SCHEMES = ("http", "https")


def is_url(path: str) -> bool:
    """Whether ``path`` is an http(s) URL rather than a file on this machine."""
    return urlparse(path).scheme in URL_SCHEMES


def local_path(path: str) -> str:
    """``path`` itself for a local file; for a URL the cached copy, downloaded first when
    absent. Raises FileNotFoundError naming the URL when it cannot be downloaded."""
    if not is_url(path):
        return path
    from iopath.common.file_io import HTTPURLHandler, PathManager

    manager = PathManager()
    manager.register_handler(HTTPURLHandler())
    try:
        return manager.get_local_path(path)
    except OSError as exc:  # URLError, HTTPError, timeouts
        raise FileNotFoundError(f"could not download {path}: {exc}") from exc
