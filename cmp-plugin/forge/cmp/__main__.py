"""``forge-cmp generate``: the process Argo CD's CMP server runs in the app directory.

stdout is data and is written once, whole, at the end; stderr is talk. On any doubt the first
(and only) line on stderr is ``forge-cmp: app A (environment E, release R): <cause>`` and stdout
stays empty, because an empty render makes Argo CD prune the app. Exit codes: 0 rendered,
1 refused (bad input, a release that does not verify: retrying gives the same answer),
2 usage, 3 transient (the registry is down or answered 5xx/429: Argo CD's next refresh may
succeed), 70 an internal error (a bug; ``FORGE_CMP_DEBUG=1`` adds the traceback after the line).

This is the composition root: the cache directory comes from the environment here, and the
registry reader (``HttpRegistryReader`` from ``FORGE_REGISTRY__*``: the stdlib's ``http.client``,
the read half of the registry port) is built only when the release is not cached, and closed
before the output is written. No render imports oras, requests, asyncio, pydantic or
pydantic-settings.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from forge.adapters.http_registry import HttpRegistryReader

__all__ = ["main"]

_USAGE = "usage: forge-cmp generate\n  (run by Argo CD in the app directory; see docs/cmp.md)\n"
EXIT_REFUSED, EXIT_USAGE, EXIT_TRANSIENT, EXIT_INTERNAL = 1, 2, 3, 70


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["-h"], ["--help"]):
        sys.stdout.write(_USAGE)
        return 0
    if args != ["generate"]:
        sys.stderr.write(f"forge-cmp: unknown arguments {' '.join(args) or '(none)'}\n{_USAGE}")
        return EXIT_USAGE
    return run_generate(Path.cwd(), os.environ)


def run_generate(app_dir: Path, environ: Mapping[str, str]) -> int:
    """Render, then print everything or nothing; the exit code of :func:`main`."""
    from forge.cmp.generate import Context, generate
    from forge.cmp.release import ReleaseCache, default_cache_dir
    from forge.errors import ForgeError, TransientError

    context = Context()
    opened: list[HttpRegistryReader] = []

    def open_registry() -> HttpRegistryReader:
        opened.append(_open_registry(environ))
        return opened[-1]

    try:
        output = generate(
            app_dir, environ, context, cache=ReleaseCache(default_cache_dir(environ)), open_registry=open_registry
        )
    except ForgeError as exc:
        _fail(context.describe(), str(exc))
        return EXIT_TRANSIENT if isinstance(exc, TransientError) else EXIT_REFUSED
    except Exception as exc:  # noqa: BLE001 - a bug still gets one line, never a traceback at a user
        _fail(context.describe(), f"internal error: {type(exc).__name__}: {exc}")
        if environ.get("FORGE_CMP_DEBUG") == "1":
            import traceback

            traceback.print_exc()
        return EXIT_INTERNAL
    finally:
        for reader in opened:
            reader.close()
    try:
        sys.stdout.buffer.write(output)
        sys.stdout.buffer.flush()
    except OSError as exc:
        _fail(context.describe(), f"cannot write the output ({exc.strerror or exc})")
        return EXIT_INTERNAL
    return 0


def _open_registry(environ: Mapping[str, str]) -> HttpRegistryReader:
    """``HttpRegistryReader`` from ``FORGE_REGISTRY__URL``/``__USERNAME``/``__PASSWORD`` (the settings group
    read directly: pydantic-settings costs a cold render ~130 ms to import)."""
    from forge.adapters.http_registry import HttpRegistryReader
    from forge.errors import InvalidInputError

    url = environ.get("FORGE_REGISTRY__URL")
    if not url:
        raise InvalidInputError("FORGE_REGISTRY__URL is not set and the release is not in the cache")
    return HttpRegistryReader(
        url,
        username=environ.get("FORGE_REGISTRY__USERNAME") or None,
        password=environ.get("FORGE_REGISTRY__PASSWORD") or None,
    )


def _fail(where: str, cause: str) -> None:
    line = " ".join(f"forge-cmp: {where}: {cause}".split())
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
