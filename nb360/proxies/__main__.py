"""``python -m nb360.proxies COMMAND``: command-line tools of the zero-cost proxies.

    python -m nb360.proxies correlate --benchmark STORE --task ninapro --archs 100 --batch random -o OUT

Commands: ``correlate`` (proxies of NB201 cells against a tabular benchmark's final scores, see
:mod:`nb360.proxies.correlate`). ``python -m nb360.proxies COMMAND --help`` lists a command's options.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main", "COMMANDS"]

COMMANDS = {"correlate": "zero-cost proxies of NB201 cells vs a tabular benchmark's final scores"}

_USAGE = "usage: python -m nb360.proxies {" + ",".join(COMMANDS) + "} ..."


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        stream = sys.stdout if argv else sys.stderr
        print(_USAGE, file=stream)
        for name, text in COMMANDS.items():
            print(f"  {name:<10} {text}", file=stream)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"nb360: error: unknown command {argv[0]!r}; choose from: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from nb360.proxies import correlate

    return correlate.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
