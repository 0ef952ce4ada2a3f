"""Where a path or URL points, for comparing locations: one scheme per store (s3, s3a and
s3n are one), absolute and normalized paths, a glob reduced to the folder it cannot leave."""

from __future__ import annotations

import os
import posixpath
import re

# Hadoop's names for the same S3 store: s3://b/k, s3a://b/k and s3n://b/k are one object.
_SCHEME_ALIASES = {"s3a": "s3", "s3n": "s3", "local": "file"}
_GLOB = re.compile(r"[*?\[]")


def location(url: str) -> tuple[str, tuple[str, ...]]:
    """(scheme, path parts) of `url`; a glob is cut to the folders before its first wildcard."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "file", url
    scheme = _SCHEME_ALIASES.get(scheme.lower(), scheme.lower())
    parts = rest.split("/")
    for i, part in enumerate(parts):
        if _GLOB.search(part):
            parts = parts[:i]  # the fixed prefix: every match lies below these folders
            break
    path = "/".join(parts)
    if scheme == "file":
        # realpath: `.`/`..`, double slashes, relative paths (against the working dir) and
        # symlinks all resolve to the one folder the job would touch.
        path = os.path.realpath(os.path.expanduser(path or "."))
    else:
        path = posixpath.normpath("/" + path)
    return scheme, tuple(p for p in path.split("/") if p)


def overlaps(a: str, b: str) -> bool:
    """Whether one location is the other or lies inside it."""
    (scheme_a, parts_a), (scheme_b, parts_b) = location(a), location(b)
    if scheme_a != scheme_b:
        return False
    shorter = min(len(parts_a), len(parts_b))
    return parts_a[:shorter] == parts_b[:shorter]
