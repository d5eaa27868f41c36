"""Fetching one publisher file over HTTP(S): mirrors, resume of a cut download, a progress bar,
and the hash checked before the file takes its name.

`requests` does the HTTP and `tqdm` the progress bar. `pooch` was the first choice, but it cannot
resume a cut download, check torchvision's hash prefix, or record a hash at the first download
without advising its own API to the user; these few lines do exactly what the cache needs.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

#: Replaces every URL's scheme and host (and prefixes its path with the mirror's).
MIRROR_ENV = "SHUFFLENET_WEIGHTS_MIRROR"
#: Never touch the network: use the cache, or say which file to place where.
OFFLINE_ENV = "SHUFFLENET_OFFLINE"
#: Hugging Face's own mirror variable, honoured for its files as `huggingface_hub` does.
HF_ENDPOINT_ENV, HF_HOST = "HF_ENDPOINT", "huggingface.co"
#: Attempts at a download that keeps being cut; each resumes where the last one stopped.
ATTEMPTS = 4
#: Seconds without a byte before a connection counts as cut.
TIMEOUT_S = 60
#: Bytes per read: what a cut connection can lose of the last read (requests drops it).
CHUNK = 1 << 16


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def mirrored(url: str) -> str:
    """`url` as fetched: through `SHUFFLENET_WEIGHTS_MIRROR` if set, else Hugging Face files
    through `HF_ENDPOINT` if set."""
    parts = urlsplit(url)
    mirror = os.environ.get(MIRROR_ENV)
    if not mirror and parts.netloc == HF_HOST:
        mirror = os.environ.get(HF_ENDPOINT_ENV)
    if not mirror:
        return url
    base = urlsplit(mirror)
    if base.scheme not in ("http", "https") or not base.netloc:
        raise ValueError(f"mirror {mirror!r} must be an http(s) URL such as https://mirror.example.com/path")
    return urlunsplit((base.scheme, base.netloc, base.path.rstrip("/") + parts.path, parts.query, ""))


def part_path(target: Path) -> Path:
    """Where the bytes of an unfinished download of `target` wait to be resumed."""
    return target.with_name(target.name + ".part")


def download(url: str, target: Path, progress: bool = True) -> Path:
    """Fetch `url` into `part_path(target)`, resuming what an earlier attempt left; returns that
    file, complete. The caller checks its hash before it takes `target`'s name."""
    import requests

    part = part_path(target)
    error: Exception | None = None
    for _ in range(ATTEMPTS):
        try:
            _fetch(url, part, progress)
            return part
        except (requests.exceptions.ChunkedEncodingError, requests.Timeout, _CutShort) as err:
            error = err
        except requests.ConnectionError as err:  # refused, no route, no name: nothing to resume
            if not part.exists() or part.stat().st_size == 0:
                raise ValueError(f"cannot reach {urlsplit(url).netloc} for {url} ({_reason(err)}); check the "
                                 f"network or proxy, set {MIRROR_ENV}, or download the file by hand and "
                                 f"place it at {target}") from None
            error = err
        except requests.RequestException as err:  # a malformed URL, redirects without end
            raise ValueError(f"cannot download {url}: {_reason(err)}; check the URL or "
                             f"{MIRROR_ENV}") from None
    got = part.stat().st_size if part.exists() else 0
    raise ValueError(f"the download of {url} was cut {ATTEMPTS} times ({_reason(error)}; {got} bytes kept "
                     f"in {part}); run the command again to resume it, set {MIRROR_ENV}, or download the "
                     f"file by hand and place it at {target}")


class _CutShort(Exception):
    """The server ended the body before the length it announced."""


def _fetch(url: str, part: Path, progress: bool) -> None:
    import requests
    from tqdm import tqdm

    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with requests.get(url, headers=headers, stream=True, timeout=TIMEOUT_S) as response:
        if response.status_code == 416:  # the kept bytes are not a prefix of this file: start over
            part.unlink()
            raise _CutShort("the server refused to resume")
        if response.status_code >= 400:
            raise ValueError(f"HTTP {response.status_code} ({response.reason}) from {url}; check the URL "
                             f"or the mirror ({MIRROR_ENV}), or download the file by hand")
        resumed = response.status_code == 206
        expected = int(response.headers.get("Content-Length", 0) or 0) + (have if resumed else 0)
        with open(part, "ab" if resumed else "wb") as out, tqdm(
                total=expected or None, initial=have if resumed else 0, unit="B", unit_scale=True,
                desc=Path(urlsplit(url).path).name, disable=None if progress else True,
                file=sys.stderr) as bar:  # None: no bar where stderr is no terminal (logs)
            for chunk in response.iter_content(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    if expected and part.stat().st_size != expected:
        raise _CutShort(f"{part.stat().st_size} of {expected} bytes")


def _reason(error: Exception | None) -> str:
    text = str(error).splitlines()[0] if error else "no reason given"
    return text[:200]
