"""``python -m fer detect PATH…``: the emotion of every face in images or folders of images."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from fer.api import add_model_options, load_recognizer
from fer.data.reading import image_files


def annotate(image: Image.Image, faces: list[dict]) -> Image.Image:
    """A copy of the image with each face's box, label, confidence and a confidence bar."""
    out = ImageOps.exif_transpose(image).convert("RGB")
    draw = ImageDraw.Draw(out)
    for face in faces:
        x, y, w, h = face["box"]
        confidence = face["probabilities"][face["label"]]
        draw.rectangle([x, y, x + w, y + h], outline=(0, 220, 0), width=max(1, w // 40))
        draw.text((x + 2, max(y - 12, 0)), f"{face['label']} {confidence:.0%}", fill=(0, 220, 0))
        draw.rectangle([x, y + h + 2, x + int(w * confidence), y + h + 6], fill=(0, 220, 0))
    return out


def detect_command(argv: Sequence[str]) -> list[dict]:
    parser = argparse.ArgumentParser(prog="fer detect", description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path, help="image files or folders")
    add_model_options(parser)
    parser.add_argument("--format", choices=["json", "table"], default="json")
    parser.add_argument("--annotate", type=Path, help="folder to write annotated copies of the images into")
    parser.add_argument("--whole-image", action="store_true",
                        help="classify the whole image when no face is found (for pre-cropped faces)")
    args = parser.parse_args(argv)

    recognizer = load_recognizer(args)
    results = []
    for path in image_files(args.paths):
        with Image.open(path) as image:
            faces = recognizer.predict_faces(image, whole_image_if_no_face=args.whole_image)
            if args.annotate:
                args.annotate.mkdir(parents=True, exist_ok=True)
                annotate(image, faces).save(args.annotate / f"{path.stem}.png")
        results.append({"file": str(path), "faces": faces})
    if args.format == "json":
        print(json.dumps(results, indent=2))
    else:
        print(f"{'file':40} {'box':>20}  emotion    confidence")
        for result in results:
            for face in result["faces"] or [{"box": "-", "label": "(no face)", "probabilities": {"(no face)": 0}}]:
                print(f"{result['file'][-40:]:40} {face['box']!s:>20}  {face['label']:10} "
                      f"{face['probabilities'][face['label']]:.3f}")
    return results
