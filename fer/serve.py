"""``python -m fer serve``: a web API (FastAPI on uvicorn) and a page to try the model in a browser.

``POST /predict`` takes a multipart upload (field ``file``) and answers
``{"faces": [{"box": [x, y, w, h], "label": …, "probabilities": {emotion: p}}, …]}``. Bad uploads get a 4xx
with a message: not an image or a corrupt one (400), empty (400), over the size limit (413), over the pixel
limit (413). ``GET /health`` reports the model; ``/docs`` is the OpenAPI page; ``GET /`` the upload page.
"""

from __future__ import annotations

import argparse
import io
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.resources import files
from typing import Annotated

import uvicorn
from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from fastapi.responses import HTMLResponse

from fer.api import add_model_options, load_recognizer
from fer.data.reading import FERDataError


def create_app(recognizer, max_upload_bytes: int = 10 * 2**20) -> FastAPI:
    """The FastAPI application around an ``EmotionRecognizer``."""
    app = FastAPI(title="fer", summary="Facial emotion recognition: every face in a photo, with probabilities.")
    # OpenCV's cascade and the model are shared by the server's worker threads: one request at a time uses them.
    lock = threading.Lock()
    page = files("fer.web").joinpath("index.html").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "emotions": list(recognizer.emotions), "image_size": recognizer.image_size,
                "max_upload_bytes": max_upload_bytes}

    @app.post("/predict")
    def predict(
        file: Annotated[UploadFile, File(description="an image: JPEG, PNG, WebP, BMP, GIF, TIFF…")],
        whole_image: Annotated[bool, Query(description="classify the whole image as one face when no face is found")]
        = False,
    ) -> dict:
        data = file.file.read(max_upload_bytes + 1)
        if not data:
            raise HTTPException(400, "The upload is empty: send an image in the form field 'file'.")
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"The upload is over the {max_upload_bytes:,}-byte limit.")
        name = file.filename or "upload"
        try:
            with lock:
                faces = recognizer.predict_faces(io.BytesIO(data), whole_image_if_no_face=whole_image, name=name)
        except FERDataError as e:
            raise HTTPException(413 if "limit" in str(e) else 400, str(e)) from e
        return {"faces": faces}

    return app


@contextmanager
def running(app: FastAPI, timeout: float = 30.0) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port in a background thread; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the server did not start on 127.0.0.1:{port} within {timeout:.0f} s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(10)


def serve_command(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="fer serve", description=__doc__.split("\n\n")[0])
    add_model_options(parser)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-upload-mb", type=float, default=10.0, help="largest accepted upload, in MiB")
    args = parser.parse_args(argv)

    app = create_app(load_recognizer(args), int(args.max_upload_mb * 2**20))
    uvicorn.run(app, host=args.host, port=args.port)
