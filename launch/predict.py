"""`vivit predict CHECKPOINT VIDEO [VIDEO ...] [--top-k 5] [--json]`: what is in these videos.

Each file is decoded directly (DALI where it handles the codec here, else PyAV) into the views
evaluation uses, and the checkpoint's model averages its logits over them. Class names come
from the checkpoint. A missing or unreadable video is one line on stderr, after the answers for
the others, and the exit status is 2; a checkpoint that cannot be used (pinned spatial weights
missing or changed, no class names) is one line on stderr and exit status 2, nothing predicted.

`Predictor` is the composition root of prediction, as `launch.run` is of training: the one
place where the video files and decoders (`data/`) meet the checkpoint's model (`core/`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from launch.logging_setup import setup_logging

if TYPE_CHECKING:
    import torch


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


class Predictor:
    """Prediction composed: a checkpoint's model (`core.predict`) and the decoders that read video
    files into its evaluation views (`data.video_file`), normalised on the model's device.

    A context manager: `close()` drops the DALI pipeline.
    """

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        device: str | torch.device | None = None,
        decoder: str | None = None,
    ) -> None:
        from core.predict import CheckpointClassifier

        self.classifier = CheckpointClassifier(checkpoint, device=device)
        c = self.classifier
        self.checkpoint, self.meta, self.cfg = c.checkpoint, c.meta, c.cfg
        self.classes, self.model = c.classes, c.model
        self.dali = self._dali(decoder or self.cfg.data.decoder)

    def _dali(self, choice: str):
        from core.predict import PredictError
        from data.dali_decode import DaliClipDecoder, dali_available

        if choice not in ("auto", "dali", "pyav"):
            raise PredictError(f"decoder {choice!r}: expected auto, dali or pyav")
        if choice == "pyav":
            return None
        if not dali_available():
            if choice == "dali":
                raise PredictError("decoder 'dali' asked for, but nvidia-dali is not importable")
            return None
        return DaliClipDecoder(
            max_batch=self.classifier.views,
            size=self.cfg.spatial.img_size,
            device=self.classifier.device,
            num_threads=1,
        )

    def predict(self, video: str | Path, top_k: int = 5):
        """Top-`top_k` classes of one video file (`data.video_file.VideoFileError` if unreadable)."""
        from core.predict import Prediction
        from data.augment import normalise
        from data.video_file import eval_views, probe_video, read_views

        c, data = self.classifier, self.cfg.data
        info = probe_video(video)
        views = eval_views(
            info,
            frames=data.frames,
            sampling=data.sampling,
            stride=data.stride,
            clips=data.eval_clips,
            crops=data.eval_crops,
            clip_fps=self.meta.get("clip_fps"),
            clip_max_seconds=self.meta.get("clip_max_seconds"),
        )
        clips, used = read_views(
            info, views, size=self.cfg.spatial.img_size, dali=self.dali, gop_trim=data.gop_trim
        )
        frames = normalise(clips.to(c.device), c.mean, c.std, c.dtype)
        return Prediction(str(video), len(views), used, c.top(frames, top_k))

    def close(self) -> None:
        if self.dali is not None:
            self.dali.close()
        self.dali = None

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def report(predictor, predictions, errors: dict[str, str] | None = None) -> dict:
    """The `--json` object: the checkpoint, each video's top classes, the videos that failed."""
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
        "errors": [{"video": v, "error": e} for v, e in (errors or {}).items()],
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.top_k < 1:
        print("vivit predict: --top-k must be >= 1", file=sys.stderr)
        return 2
    setup_logging()
    logging.getLogger().setLevel(logging.WARNING)  # stdout is the answer; stderr stays quiet
    from data.video_file import VideoFileError, probe_video

    errors: dict[str, str] = {}
    for video in args.videos:  # a bad file is named before the model is paid for
        try:
            probe_video(video)
        except VideoFileError as err:
            errors[video] = str(err)
    readable = [v for v in args.videos if v not in errors]
    predictions = []
    predictor = None
    if readable:
        from core.predict import PredictError

        try:
            with Predictor(args.checkpoint, device=args.device, decoder=args.decoder) as predictor:
                for video in readable:
                    try:
                        predictions.append(predictor.predict(video, args.top_k))
                    except VideoFileError as err:
                        errors[video] = str(err)
        except PredictError as err:  # the checkpoint: nothing can be predicted
            for message in errors.values():
                print(f"vivit predict: {message}", file=sys.stderr)
            print(f"vivit predict: {err}", file=sys.stderr)
            return 2
    if args.json and predictor is not None:
        print(json.dumps(report(predictor, predictions, errors), indent=2))
    elif not args.json:
        for p in predictions:
            print(f"{p.video}  ({p.views} views, {p.decoder})")
            for c in p.top:
                print(f"  {100 * c.prob:6.2f}%  {c.label}")
    for message in errors.values():  # after the answers, so the last line names a failure
        print(f"vivit predict: {message}", file=sys.stderr)
    return 2 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
