import io
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import SIX
from fer.serve import create_app


@pytest.fixture(scope="module")
def client(trained):
    r, _ = trained
    # A 500 would raise here instead of passing as a status code: the tests below would fail on it.
    return TestClient(create_app(r, max_upload_bytes=200_000), raise_server_exceptions=True)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def post(client, data: bytes, name: str = "face.png", **params):
    return client.post("/predict", files={"file": (name, data, "image/png")}, params=params)


def test_a_face_gets_a_label_and_probabilities_for_every_emotion(client, tiny_tree):
    face = (tiny_tree / "test" / "happy" / "00000.png").read_bytes()
    response = post(client, face, whole_image="true")
    assert response.status_code == 200
    (result,) = response.json()["faces"]
    assert result["box"] == [0, 0, 48, 48] and result["label"] in SIX
    assert set(result["probabilities"]) == set(SIX) and abs(sum(result["probabilities"].values()) - 1) < 1e-3


def test_a_photo_without_faces_gives_an_empty_list(client):
    response = post(client, png(Image.new("RGB", (160, 120), (128, 128, 128))))
    assert response.status_code == 200 and response.json() == {"faces": []}


def test_health_and_openapi(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["emotions"] == SIX
    assert "/predict" in client.get("/openapi.json").json()["paths"]
    assert "<canvas" in client.get("/").text


@pytest.mark.parametrize(
    "data, status, message",
    [
        (b"", 400, "empty"),
        (b"hello, this is text", 400, "not an image"),
        (png(Image.new("L", (64, 64), 90))[:60], 400, "corrupt or truncated"),
        (b"\0" * 200_001, 413, "limit"),
        (png(Image.new("1", (9000, 9000))), 413, "limit"),  # 81 megapixels in a few kB: a decompression bomb
    ],
    ids=["empty", "text", "truncated", "too-large", "bomb"],
)
def test_bad_uploads_get_a_4xx_with_a_message(client, data, status, message):
    response = post(client, data)
    assert response.status_code == status
    assert message in response.json()["detail"]


def test_a_missing_file_field_is_a_4xx(client):
    assert client.post("/predict").status_code == 422


def test_concurrent_requests_are_all_answered(client, tiny_tree):
    face = (tiny_tree / "test" / "sad" / "00000.png").read_bytes()
    expected = post(client, face, whole_image="true").json()
    results = []

    def worker() -> None:
        for _ in range(5):
            results.append(post(client, face, whole_image="true"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 40
    assert all(r.status_code == 200 and r.json() == expected for r in results)


def _mangled_images() -> st.SearchStrategy[bytes]:
    seeds = [png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30), np.uint8)))]
    for fmt, mode in (("JPEG", "RGB"), ("GIF", "P"), ("WEBP", "RGBA"), ("BMP", "L"), ("TIFF", "I;16")):
        buffer = io.BytesIO()
        Image.new(mode, (33, 21)).save(buffer, format=fmt)
        seeds.append(buffer.getvalue())
    return st.one_of(
        st.binary(max_size=2000),
        st.tuples(st.sampled_from(seeds), st.integers(0, 400)).map(lambda t: t[0][: t[1]]),  # truncated
        st.tuples(st.sampled_from(seeds), st.integers(0, 300), st.binary(min_size=1, max_size=8)).map(
            lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + len(t[2]):]  # bytes overwritten
        ),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_mangled_images())
def test_fuzzed_uploads_never_get_a_server_error(client, data):
    response = post(client, data, whole_image="true")
    assert response.status_code in (200, 400, 413)
    if response.status_code == 200:
        assert all(face["label"] in SIX for face in response.json()["faces"])
