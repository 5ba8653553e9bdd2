"""``forge-cmp generate``: the process Argo CD's CMP server runs in the app directory.

stdout is data and is written once, whole, at the end; stderr is talk. On any doubt the first
(and only) line on stderr is ``forge-cmp: app A (environment E, release R): <cause>`` and stdout
stays empty, because an empty render makes Argo CD prune the app. Exit codes: 0 rendered,
1 refused (bad input, a release that does not verify: retrying gives the same answer),
2 usage, 3 transient (the registry is down or answered 5xx/429: Argo CD's next refresh may
succeed), 70 an internal error (a bug; ``FORGE_CMP_DEBUG=1`` adds the traceback after the line).

``FORGE_CMP_LOG`` (a path; unset: nothing) gets one JSON line per render, success or not, for the
operator's log pipeline: ``time``, ``level``, ``service`` ``forge-cmp``, ``message`` (``rendered`` or
the cause), ``app``, ``environment``, ``release`` and ``digest`` when known, ``source`` (``memo``,
``cache`` or ``registry``), ``render_ms`` (from the start of ``run_generate``; the interpreter's own
start-up is not in it), ``bytes`` and ``exit``. In the sidecar it is ``/proc/1/fd/1``: the stdout of
the container's PID 1 (``argocd-cmp-server``, the same uid), i.e. the container's log, which Alloy
ships to Loki. Writing it never changes the exit code or stdout.

This is the composition root: the cache directory comes from the environment here, and the
registry reader (``HttpRegistryReader`` from ``FORGE_REGISTRY__*``: the stdlib's ``http.client``,
the read half of the registry port) is built only when the release is not cached, and closed
before the output is written. No render imports oras, requests, asyncio, pydantic or
pydantic-settings.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from forge.adapters.http_registry import HttpRegistryReader
    from forge.cmp.generate import Context

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

    started = time.perf_counter()
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
        code = EXIT_TRANSIENT if isinstance(exc, TransientError) else EXIT_REFUSED
        _fail(context.describe(), str(exc))
        _record(environ, context, started, code, str(exc), size=0, pulled=bool(opened))
        return code
    except Exception as exc:  # noqa: BLE001 - a bug still gets one line, never a traceback at a user
        cause = f"internal error: {type(exc).__name__}: {exc}"
        _fail(context.describe(), cause)
        if environ.get("FORGE_CMP_DEBUG") == "1":
            import traceback

            traceback.print_exc()
        _record(environ, context, started, EXIT_INTERNAL, cause, size=0, pulled=bool(opened))
        return EXIT_INTERNAL
    finally:
        for reader in opened:
            reader.close()
    try:
        sys.stdout.buffer.write(output)
        sys.stdout.buffer.flush()
    except OSError as exc:
        cause = f"cannot write the output ({exc.strerror or exc})"
        _fail(context.describe(), cause)
        _record(environ, context, started, EXIT_INTERNAL, cause, size=0, pulled=bool(opened))
        return EXIT_INTERNAL
    _record(environ, context, started, 0, "rendered", size=len(output), pulled=bool(opened))
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


def _record(
    environ: Mapping[str, str], context: Context, started: float, code: int, message: str, *, size: int, pulled: bool
) -> None:
    """One JSON line about this render appended to ``FORGE_CMP_LOG`` (module docstring); never raises."""
    path = environ.get("FORGE_CMP_LOG")
    if not path:
        return
    import json
    from datetime import UTC, datetime

    pointer = context.pointer
    source = context.source if context.source == "memo" else ("registry" if pulled else "cache")
    entry: dict[str, object] = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "level": "INFO" if code == 0 else "ERROR",
        "service": "forge-cmp",
        "logger": "forge.cmp",
        "message": message,
        "app": context.app,
        "environment": context.environment,
        **({} if pointer is None else {"release": pointer.describe(), "digest": pointer.digest}),
        "source": source,
        "render_ms": round((time.perf_counter() - started) * 1000, 2),
        "bytes": size,
        "exit": code,
    }
    try:
        with open(path, "a", encoding="utf-8") as log:  # noqa: PTH123 - a path or /proc/1/fd/1, appended once
            log.write(json.dumps(entry, separators=(",", ":")) + "\n")
    except OSError as exc:
        if code == 0:  # a refusal's one line on stderr stays the only one
            sys.stderr.write(f"forge-cmp: FORGE_CMP_LOG {path}: cannot append ({exc.strerror or exc})\n")


def _fail(where: str, cause: str) -> None:
    line = " ".join(f"forge-cmp: {where}: {cause}".split())
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
