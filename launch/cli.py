"""`vivit` command: one console script, subcommands dispatched to their own modules.

Each subcommand module exposes `main(argv: list[str]) -> int`; it is imported only when
used, so `vivit shards ...` never pays for DeepSpeed's import.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "shards": ("launch.shards", "build, inspect or synthesise WebDataset video shards"),
    "pretrain": ("launch.pretrain", "pretrain a timm ViT on an image folder (spatial weights)"),
    "train": ("launch.train", "train ViViT-FE from a YAML config (full or frozen mode)"),
    "eval": ("launch.evaluate", "multi-view top-1/top-5 of a checkpoint"),
    "predict": ("launch.predict", "top classes of video files, read directly, by a checkpoint"),
    "config": ("launch.config", "list config keys (type, default, meaning) or show a resolved one"),
    "demo": ("launch.demo", "the method vs full fine-tuning on the built-in synthetic set"),
    "ablate": ("launch.ablate", "adapter x temporal-init grid on the built-in synthetic set"),
    "bench": (
        "benchmarks.cli",
        "time/memory benchmark suite (train, frames, data, recipe); faults: the fault table",
    ),
}


def _usage() -> str:
    lines = ["usage: vivit COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`vivit COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        near = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        print(f"vivit: unknown command '{name}'{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
