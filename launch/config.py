"""`vivit config [PREFIX]`: every config key with type, default and meaning;
`vivit config --show CONFIG.yaml|RUN_DIR [key=value ...]`: the resolved config, as a run
would write it to its `config.yaml`.

The documentation is the config dataclasses' own field docstrings, so it cannot drift from
what `vivit train` accepts.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vivit config",
        description="List the config keys `vivit train`/`vivit eval` accept, or show a "
        "resolved config.",
    )
    p.add_argument(
        "prefix", nargs="?", default="", help="only keys starting with this (e.g. data, optim.lr)"
    )
    p.add_argument(
        "--show",
        metavar="CONFIG",
        help="print the resolved config of a YAML (or a run directory's config.yaml)",
    )
    p.add_argument("overrides", nargs="*", default=[], help="key=value overrides for --show")
    return p


def list_keys(prefix: str = "") -> str:
    """The key listing, grouped by the section (component dataclass) that owns each key."""
    from core.config import ExperimentConfig
    from core.configtools import describe, format_value

    lines: list[str] = []
    section = None
    for k in describe(ExperimentConfig):
        if prefix and not (k.key == prefix or k.key.startswith(prefix.rstrip(".") + ".")):
            continue
        if k.section != section:
            section = k.section
            lines.append(f"\n[{section}]" if section else "[top level]")
        lines.append(f"{k.key}: {k.type} = {format_value(k.default)}")
        if k.doc:
            lines.append(textwrap.indent(textwrap.fill(k.doc, 92), "    "))
    return "\n".join(lines).lstrip("\n")


def show(config: str, overrides: list[str]) -> str:
    """The resolved config (defaults + YAML + overrides) as YAML."""
    import yaml

    from core.config import load_config
    from core.configtools import to_dict

    path = Path(config)
    if path.is_dir():
        path = path / "config.yaml"
    return yaml.safe_dump(to_dict(load_config(path, overrides)), sort_keys=False).rstrip()


def main(argv: list[str] | None = None) -> int:
    from core.configtools import ConfigError

    args = _parser().parse_intermixed_args(list(sys.argv[1:] if argv is None else argv))
    if args.show is not None and args.prefix:  # argparse fills PREFIX with the first override
        args.overrides.insert(0, args.prefix)
    elif args.overrides or "=" in args.prefix:
        print("vivit config: key=value overrides need --show CONFIG", file=sys.stderr)
        return 2
    try:
        if args.show is not None:
            text = show(args.show, args.overrides)
        else:
            text = list_keys(args.prefix)
            if not text:
                raise ConfigError(f"no config key starts with {args.prefix!r}")
    except ConfigError as err:
        print(f"vivit config: {err}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
