"""``python -m jex.conformance serve``: one tracebook-conformance candidate process.

Stdout carries protocol frames only; diagnostics go to stderr.
"""

from __future__ import annotations

import sys

USAGE = "usage: python -m jex.conformance serve   (tracebook-conformance candidate on stdin/stdout)"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["serve"]:
        print(USAGE, file=sys.stderr)
        return 2
    from .adapter import serve

    return serve(sys.stdin, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
