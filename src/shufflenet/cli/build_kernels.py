"""Build the C++ CPU kernels into a kernel cache ahead of training, or fill a cluster's shared one.

  shufflenet build-kernels                                  # your own cache (0700)
  shufflenet build-kernels --cache-dir /shared/shufflenet-kernels --shared

Libraries already there are kept when they pass every check (their recorded SHA-256, an ELF
shared object exporting the kernel's functions), and rebuilt otherwise. With --shared the
folder is made 0755 and its libraries 0644: other users set SHUFFLENET_KERNEL_CACHE to it and
use it read-only, never writing to it; when it lacks a library (another compiler, a newer
source), they are told to ask you to run this command again. Only the folder's owner can fill
it, and it must be writable by nobody else, nor any folder above it.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..kernels.build import CACHE_ENV, KernelUnavailable, cache_dir, fill_cache
from .common import run_command

PROG = "shufflenet build-kernels"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", metavar="DIR",
                        help=f"the cache to fill (default: ${CACHE_ENV}, else "
                        "$XDG_CACHE_HOME or ~/.cache, then shufflenet/kernels)")
    parser.add_argument("--shared", action="store_true",
                        help="open the folder for other users to read (0755), as a read-only "
                        "cache they point SHUFFLENET_KERNEL_CACHE at")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        folder = Path(os.path.abspath(args.cache_dir)) if args.cache_dir else cache_dir()
        try:
            libraries = fill_cache(folder, shared=args.shared)
        except KernelUnavailable as err:
            raise ValueError(str(err)) from None
        for path, built in libraries:
            print(f"{path}: {'built' if built else 'verified, kept'}")
        if args.shared:
            print(f"other users: export {CACHE_ENV}={folder}")

    return run_command(PROG, body)
