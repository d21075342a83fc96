"""Emotions of the faces in live video: the loop under ``EmotionRecognizer.predict_realtime`` and ``fer stream``.

Each frame's faces are found and classified in one batch; a face's probabilities are averaged over its last
few frames (faces are followed from frame to frame by box overlap), so labels do not flicker. Frames are
annotated with boxes, labels, confidence bars and the frames/s; they go to ``output`` and, with ``show``,
to a window (which needs an OpenCV build with GUI support; the headless wheel this project installs has none).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from fer.faces import Box


class Smoother:
    """Averages each face's probabilities over its last ``window`` frames; a face is the previous frame's
    face whose box overlaps it most (IoU ≥ 0.3)."""

    def __init__(self, window: int = 5) -> None:
        self.window = window
        self.tracks: list[tuple[Box, deque]] = []

    def __call__(self, boxes: list[Box], probs: np.ndarray) -> np.ndarray:
        tracks, out = [], []
        for box, p in zip(boxes, probs):
            scores = [box.iou(old) for old, _ in self.tracks]
            best = int(np.argmax(scores)) if scores else -1
            history = self.tracks.pop(best)[1] if best >= 0 and scores[best] >= 0.3 else deque(maxlen=self.window)
            history.append(p)
            tracks.append((box, history))
            out.append(np.mean(history, axis=0))
        self.tracks = tracks
        return np.array(out) if out else probs


def draw(frame: np.ndarray, boxes: list[Box], probs: np.ndarray, emotions: Sequence[str], fps: float) -> None:
    """Boxes, labels and confidence bars of the faces, and the frames/s, drawn onto a BGR frame in place."""
    green = (60, 200, 60)
    for box, p in zip(boxes, probs):
        best = int(p.argmax())
        cv2.rectangle(frame, (box.x, box.y), (box.x + box.w, box.y + box.h), green, 2)
        cv2.putText(frame, f"{emotions[best]} {p[best]:.0%}", (box.x, max(box.y - 6, 12)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, green, 1, cv2.LINE_AA)
        cv2.rectangle(frame, (box.x, box.y + box.h + 3), (box.x + int(box.w * p[best]), box.y + box.h + 8), green, -1)
    cv2.putText(frame, f"{fps:.1f} fps", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)


def stream(recognizer, source: int | str = 0, output: str | Path | None = None, show: bool = False,
           smoothing: int = 5, max_frames: int | None = None, detect_every: int = 1) -> dict:
    """Annotate the video from ``source`` (webcam index, video file or stream URL) until it ends, ``max_frames``
    are done, or (with ``show``) ``q`` is pressed. With ``detect_every`` N > 1 faces are searched for every Nth
    frame and their boxes reused in between (faces move little in a few frames; detection costs most).
    Returns ``{"frames", "fps", "faces"}``: frames read, mean frames/s of detection + classification + drawing,
    faces found in all."""
    if show:
        try:
            cv2.namedWindow("fer")
        except cv2.error as e:
            raise RuntimeError(
                "Showing video needs OpenCV with GUI support, which opencv-python-headless lacks: write the "
                "annotated video with output=… (--output), or install opencv-python instead"
            ) from e
    capture = cv2.VideoCapture(int(source) if str(source).isdigit() else str(source))
    if not capture.isOpened():
        raise FileNotFoundError(f"Cannot open video source {source!r}: expected a webcam index, a video file or a URL")
    writer, smoother, frames, faces, fps, busy = None, Smoother(smoothing), 0, 0, 0.0, 0.0
    try:
        while max_frames is None or frames < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            start = time.perf_counter()
            gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            if frames % detect_every == 0:
                boxes = recognizer.find_faces(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            probs = recognizer.classify_faces(gray, boxes)
            probs = smoother(boxes, probs)
            draw(frame, boxes, probs, recognizer.emotions, fps)
            elapsed = time.perf_counter() - start
            busy += elapsed
            fps = 1 / elapsed if not fps else 0.9 * fps + 0.1 / elapsed
            frames, faces = frames + 1, faces + len(boxes)
            if output is not None:
                if writer is None:
                    rate = capture.get(cv2.CAP_PROP_FPS) or 25.0
                    writer = cv2.VideoWriter(str(output), cv2.VideoWriter_fourcc(*"mp4v"), rate, frame.shape[1::-1])
                writer.write(frame)
            if show:
                cv2.imshow("fer", frame)
                if cv2.waitKey(1) & 0xFF == ord("q"):
                    break
    finally:
        capture.release()
        if writer is not None:
            writer.release()
        if show:
            cv2.destroyAllWindows()
    return {"frames": frames, "fps": frames / busy if busy else 0.0, "faces": faces}
