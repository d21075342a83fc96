"""``python -m fer stream --source 0|video.mp4|URL [--output out.mp4]``: emotions of the faces in live video.

The loop is ``fer.video.stream``: faces found and classified in one batch a frame, each face's probabilities
averaged over its last few frames, frames annotated with boxes, labels, confidence bars and the frames/s.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from fer.api import add_model_options, load_recognizer
from fer.video import stream


def stream_command(argv: Sequence[str]) -> dict:
    parser = argparse.ArgumentParser(prog="fer stream", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default="0", help="webcam index, video file or stream URL (default: 0)")
    parser.add_argument("--output", type=Path, help="write the annotated video here (.mp4)")
    add_model_options(parser)
    parser.add_argument("--show", action="store_true", help="show a window (needs OpenCV with GUI support)")
    parser.add_argument("--smoothing", type=int, default=5, help="frames to average each face's probabilities over")
    parser.add_argument("--max-frames", type=int, help="stop after this many frames")
    parser.add_argument("--detect-every", type=int, default=1, help="search for faces every Nth frame only")
    args = parser.parse_args(argv)
    if args.output is None and not args.show:
        parser.error("nothing to do: give --output FILE and/or --show")

    recognizer = load_recognizer(args)
    stats = stream(recognizer, args.source, args.output, args.show, args.smoothing,
                   args.max_frames, args.detect_every)
    print(f"{stats['frames']} frames, {stats['faces']} faces, {stats['fps']:.1f} frames/s"
          + (f"; annotated video: {args.output}" if args.output else ""))
    return stats
