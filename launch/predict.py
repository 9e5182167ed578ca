"""`vivit predict CHECKPOINT VIDEO [VIDEO ...] [--top-k 5] [--json]`: what is in these videos.

Each file is decoded directly (DALI where it handles the codec here, else PyAV) into the views
evaluation uses, and the checkpoint's model averages its logits over them. Class names come
from the checkpoint. Errors (a missing or unreadable video, a checkpoint whose pinned spatial
weights are missing or changed) are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from launch.logging_setup import setup_logging


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vivit predict",
        description="Top classes of video files, decoded directly (no shards), by a trained "
        "checkpoint: evaluation's views, logits averaged over them, class names from the "
        "checkpoint.",
    )
    p.add_argument("checkpoint", help="a checkpoint directory, or a run directory (its newest)")
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (any FFmpeg format)")
    p.add_argument("--top-k", type=int, default=5, help="classes shown per video (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if any)")
    p.add_argument(
        "--decoder",
        choices=["auto", "dali", "pyav"],
        default=None,
        help="default: the checkpoint's data.decoder",
    )
    return p


def report(predictor, predictions) -> dict:
    """The `--json` object: the checkpoint, then each video's top classes."""
    return {
        "checkpoint": str(predictor.checkpoint),
        "step": predictor.meta.get("step"),
        "mode": predictor.meta.get("mode"),
        "num_classes": len(predictor.classes),
        "predictions": [
            {
                "video": p.video,
                "views": p.views,
                "decoder": p.decoder,
                "top": [{"index": c.index, "label": c.label, "prob": c.prob} for c in p.top],
            }
            for p in predictions
        ],
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.top_k < 1:
        print("vivit predict: --top-k must be >= 1", file=sys.stderr)
        return 2
    setup_logging()
    logging.getLogger().setLevel(logging.WARNING)  # stdout is the answer; stderr stays quiet
    from data.video_file import VideoFileError, probe_video

    try:
        for video in args.videos:  # fail on a bad file before paying for the model
            probe_video(video)
        from core.predict import PredictError, Predictor

        try:
            predictor = Predictor(args.checkpoint, device=args.device, decoder=args.decoder)
            predictions = [predictor.predict(v, args.top_k) for v in args.videos]
        except PredictError as err:
            print(f"vivit predict: {err}", file=sys.stderr)
            return 2
    except VideoFileError as err:
        print(f"vivit predict: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report(predictor, predictions), indent=2))
        return 0
    for p in predictions:
        print(f"{p.video}  ({p.views} views, {p.decoder})")
        for c in p.top:
            print(f"  {100 * c.prob:6.2f}%  {c.label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
