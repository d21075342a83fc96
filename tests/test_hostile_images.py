"""Property-based fuzzing of the image reading path: every input decodes to a 48×48 uint8 face or raises
FERDataError naming the file — no other exception, no hang, bounded memory."""

import io
import resource

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fer.data.reading import FERDataError, read_image


def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    return _encoded(Image.new("RGB", (40, 20), (200, 30, 30)), "JPEG", exif=exif)


def _animated_gif() -> bytes:
    frames = [Image.new("P", (30, 30), i * 40) for i in range(3)]
    return _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)


VALID = {
    "png-gray": _encoded(Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48), np.uint8)), "PNG"),
    "png-16bit": _encoded(Image.fromarray(np.full((30, 30), 40000, np.uint16)), "PNG"),
    "png-palette": _encoded(Image.new("P", (20, 20), 3), "PNG"),
    "png-rgba": _encoded(Image.new("RGBA", (50, 30), (10, 200, 10, 128)), "PNG"),
    "jpeg-cmyk": _encoded(Image.new("CMYK", (25, 25), (0, 100, 200, 10)), "JPEG"),
    "jpeg-exif-rotated": _exif_rotated(),
    "gif-animated": _animated_gif(),
    "webp": _encoded(Image.new("RGB", (64, 64), (1, 2, 3)), "WEBP"),
    "bmp": _encoded(Image.new("L", (7, 100)), "BMP"),
    "tiff-float": _encoded(Image.fromarray(np.linspace(0, 1, 400, dtype=np.float32).reshape(20, 20)), "TIFF"),
}
BOMBS = {
    "png-81-megapixels": _encoded(Image.new("1", (9000, 9000)), "PNG"),
    "gif-huge-canvas": _encoded(Image.new("P", (12000, 12000)), "GIF"),
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_every_kind_of_valid_image_becomes_a_48px_gray_face(name, tmp_path):
    path = tmp_path / f"face.{name.split('-')[0]}"
    path.write_bytes(VALID[name])
    face = read_image(path, 48)
    assert face.shape == (48, 48) and face.dtype == np.uint8


def test_exif_orientation_is_honoured(tmp_path):
    path = tmp_path / "rotated.jpg"
    path.write_bytes(_exif_rotated())
    with Image.open(path) as im:
        assert im.size == (40, 20)
    assert read_image(path, 48).shape == (48, 48)
    from fer.faces import load_gray

    assert load_gray(path).shape == (40, 20)  # displayed upright: 20 wide, 40 high


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_decompression_bombs_are_refused_without_decoding(name, tmp_path):
    path = tmp_path / f"{name}.img"
    path.write_bytes(BOMBS[name])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(FERDataError, match=str(path)):
        read_image(path, 48)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # kB: nothing big was decoded


def _mangled() -> st.SearchStrategy[bytes]:
    seeds = st.sampled_from(sorted(VALID.values()) + sorted(BOMBS.values()))
    return st.one_of(
        st.binary(max_size=3000),
        st.builds(lambda data, n: data[:n], seeds, st.integers(0, 3000)),  # truncated
        st.builds(lambda data, at, junk: data[:at] + junk + data[at + len(junk):],  # bytes overwritten
                  seeds, st.integers(0, 400), st.binary(min_size=1, max_size=16)),
    )


@settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_mangled())
def test_fuzzed_bytes_decode_or_raise_the_projects_error(data, tmp_path):
    path = tmp_path / "fuzzed.img"
    path.write_bytes(data)
    try:
        face = read_image(path, 48)
    except FERDataError as e:
        assert str(path) in str(e)
    else:
        assert face.shape == (48, 48) and face.dtype == np.uint8
