"""The weight table: every published file of every model, by (model, tag).

One schema serves the built-in table (`published.yaml`, read from each publisher's own code) and
a user's own entries (a YAML file named by `SHUFFLENET_WEIGHTS_FILE` or `--weights-table`), which
add to or replace built-in entries of the same (model, tag): a team publishes its fine-tuned
weights the way torchvision, timm and mindcv publish theirs.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

import yaml

from ..data.presets import PRESETS, get_preprocessing
from ..lineages import ORIGINS
from ..models import list_models
from ..models.description import MAX_METADATA_BYTES, check_options, printable

BUILT_IN = Path(__file__).with_name("published.yaml")
#: Environment variable naming a user's YAML file of entries.
TABLE_ENV = "SHUFFLENET_WEIGHTS_FILE"
#: `publisher` of this project's own checkpoints (no conversion).
OWN = "shufflenet"
#: How a file is checked: the full SHA-256 the entry records; the hex after the file name's last
#: `-` as a SHA-256 prefix (torchvision's convention, checked by `torch.hub`); or the SHA-256
#: recorded at the first download and required afterwards (publishers that document none).
CHECKS = ("sha256", "sha256-prefix", "first-download")
_TAG = re.compile(r"[a-z0-9][a-z0-9_\-]{0,31}")
_HEX_SUFFIX = re.compile(r"-([0-9a-f]{6,64})\.[^/]+$")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class WeightEntry:
    """One published weights file and what its publisher says of it."""

    model: str
    tag: str
    publisher: str
    url: Optional[str] = None
    check: str = "first-download"
    sha256: Optional[str] = None
    top1: Optional[float] = None
    top5: Optional[float] = None
    #: The publisher's evaluation: resize, crop, interpolation, mean/std (or BGR 0..255).
    evaluation: dict = field(default_factory=dict)
    classes: int = 1000
    licence: Optional[str] = None
    recipe: Optional[str] = None
    paper: Optional[str] = None
    #: Where the entry's facts were read (publisher, version, file, symbol).
    reference: Optional[str] = None
    #: Where a user downloads a file that is no direct download (Megvii's drive links).
    page: Optional[str] = None
    file_name: Optional[str] = None
    #: Network options and input convention the converted weights get, over the lineage's.
    options: dict = field(default_factory=dict)
    preprocessing: Optional[str] = None
    #: The file that declared the entry, for messages.
    declared_in: str = "the built-in table"

    @property
    def name(self) -> str:
        return f"{self.model}.{self.tag}"

    @property
    def source_name(self) -> str:
        """The publisher's file name (the URL's last part, unless the entry names it)."""
        return self.file_name or Path(urlsplit(self.url or "").path).name

    @property
    def hash_prefix(self) -> Optional[str]:
        found = _HEX_SUFFIX.search(self.source_name) if self.check == "sha256-prefix" else None
        return found.group(1) if found else None

    @property
    def direct(self) -> bool:
        """Whether the file downloads from a URL (Megvii's do not)."""
        return self.url is not None


def parse_entries(data: Any, source: str) -> list[WeightEntry]:
    """Checked entries from a parsed YAML document (a list of mappings)."""
    if not isinstance(data, list):
        raise ValueError(f"{source}: expected a YAML list of weight entries, got {type(data).__name__}")
    return [_entry(item, f"{source}, entry {index + 1}", source) for index, item in enumerate(data)]


def _entry(item: Any, where: str, source: str) -> WeightEntry:
    known = {f.name for f in fields(WeightEntry)} - {"declared_in"}
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected a mapping of {', '.join(sorted(known))}")
    unknown = sorted(set(map(str, item)) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(sorted(known))}")
    missing = [key for key in ("model", "tag", "publisher") if key not in item]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)}")
    entry = WeightEntry(**{**item, "declared_in": source})
    _check_entry(entry, where)
    return entry


def _check_entry(entry: WeightEntry, where: str) -> None:
    if entry.model not in list_models():
        raise ValueError(f"{where}: model {printable(entry.model)!r} is not registered; see "
                         "`shufflenet summary` for the names")
    if not isinstance(entry.tag, str) or not _TAG.fullmatch(entry.tag):
        raise ValueError(f"{where}: tag {printable(str(entry.tag))!r} must be 1-32 lower-case letters, "
                         "digits, '-' or '_'")
    if entry.publisher not in (*ORIGINS, OWN):
        raise ValueError(f"{where}: publisher {printable(str(entry.publisher))!r} is none of "
                         f"{', '.join((*ORIGINS, OWN))}")
    if entry.check not in CHECKS:
        raise ValueError(f"{where}: check {entry.check!r} is none of {', '.join(CHECKS)}")
    if entry.url is None and not (entry.page and entry.file_name):
        raise ValueError(f"{where}: give a url, or a page and file_name for a manual download")
    if entry.url is not None and urlsplit(entry.url).scheme not in ("https", "http"):
        raise ValueError(f"{where}: url {printable(entry.url)!r} is not http(s)")
    if entry.check == "sha256" and not (isinstance(entry.sha256, str) and _SHA256.fullmatch(entry.sha256)):
        raise ValueError(f"{where}: check sha256 needs the file's full SHA-256 (64 lower-case hex digits)")
    if entry.check == "sha256-prefix" and entry.hash_prefix is None:
        raise ValueError(f"{where}: check sha256-prefix needs a file name ending in -<hex>.<ext>")
    if not Path(entry.source_name).name or entry.source_name in (".", ".."):
        raise ValueError(f"{where}: cannot tell the file name from {printable(str(entry.url))!r}")
    check_options(entry.options)
    if entry.preprocessing is not None:
        try:
            get_preprocessing(entry.preprocessing)
        except (KeyError, ValueError):
            raise ValueError(f"{where}: preprocessing {printable(str(entry.preprocessing))!r} is none of "
                             f"{', '.join(PRESETS)}") from None


def read_entries(path: str | os.PathLike) -> list[WeightEntry]:
    """A user's YAML file of entries; a clear error naming the file for anything wrong."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights table {path} does not exist; check {TABLE_ENV} or --weights-table")
    if path.stat().st_size > MAX_METADATA_BYTES:
        raise ValueError(f"weights table {path} is over {MAX_METADATA_BYTES >> 20} MiB: not a table")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"weights table {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    entries = parse_entries(data or [], str(path))
    for entry in entries:
        if entry.direct and entry.check != "sha256":
            raise ValueError(f"{path}: {entry.name} needs sha256 (the file's full SHA-256): a user's "
                             "entries are checked by their full hash")
    return entries


@lru_cache(maxsize=1)
def built_in_entries() -> tuple[WeightEntry, ...]:
    return tuple(parse_entries(yaml.safe_load(BUILT_IN.read_text(encoding="utf-8")), str(BUILT_IN)))


def weight_table(user_file: str | os.PathLike | None = None) -> dict[tuple[str, str], WeightEntry]:
    """(model, tag) -> entry: the built-in table, then the user's file over it (the argument,
    else `SHUFFLENET_WEIGHTS_FILE`)."""
    table = {(entry.model, entry.tag): entry for entry in built_in_entries()}
    user_file = user_file or os.environ.get(TABLE_ENV)
    if user_file:
        table.update({(entry.model, entry.tag): entry for entry in read_entries(user_file)})
    return table


def default_tag(model: str, table: dict[tuple[str, str], WeightEntry]) -> str:
    """The model's default weights: the best published top-1 among direct downloads."""
    candidates = [entry for (name, _), entry in table.items() if name == model and entry.direct]
    if not candidates:
        raise ValueError(f"no published weights of {model} download directly; see `shufflenet weights "
                         f"--model {model}`")
    return max(candidates, key=lambda entry: entry.top1 or 0.0).tag


def find_entry(model: str, tag: str | bool, table: dict[tuple[str, str], WeightEntry]) -> WeightEntry:
    """The entry for `tag` (True or "default": the model's default)."""
    if tag is True or tag == "default":
        tag = default_tag(model, table)
    entry = table.get((model, str(tag)))
    if entry is None:
        tags = sorted(t for (name, t) in table if name == model)
        known = (f"published tags of {model}: {', '.join(tags)}" if tags
                 else f"{model} has no published weights")
        raise ValueError(f"no weights tagged {printable(str(tag))!r} for {model} ({known}); or pass a "
                         "checkpoint path")
    return entry
