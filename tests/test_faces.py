"""Face detectors by name, their options, MTCNN's weights and eye alignment."""

import os
import shutil

import numpy as np
import pytest

from fer.api import add_model_options, detector_from_args
from fer.bench import bench_detect
from fer.errors import ConfigError
from fer.faces import Box, HaarFaceDetector, MTCNNFaceDetector, create_detector, crop
from fer.faces.mtcnn import WEIGHT_FILES, default_weights_dir

PHOTOS_DIR = os.environ.get("FER_PHOTOS_DIR")


def test_mtcnn_runs_on_the_weights_its_wheel_installed_and_finds_nothing_in_a_blank_image():
    detector = MTCNNFaceDetector()
    assert sum(p.numel() for net in (detector.pnet, detector.rnet, detector.onet) for p in net.parameters()) > 400_000
    assert detector(np.zeros((480, 640, 3), np.uint8)) == []
    assert detector(np.full((30, 40), 200, np.uint8)) == []  # grayscale, and smaller than the proposal window


def test_mtcnn_reads_weights_from_a_folder_and_names_what_is_missing(tmp_path):
    for name in WEIGHT_FILES:
        shutil.copy(default_weights_dir() / name, tmp_path / name)
    assert MTCNNFaceDetector(weights_dir=tmp_path)(np.zeros((64, 64, 3), np.uint8)) == []
    (tmp_path / "onet.lz4").unlink()
    with pytest.raises(ConfigError, match=r"has no onet\.lz4"):
        MTCNNFaceDetector(weights_dir=tmp_path)


def test_an_unknown_detector_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown face detector 'yolo'; known: mtcnn, haar"):
        create_detector("yolo")


def test_the_command_line_options_build_the_detector_they_name():
    import argparse

    parser = argparse.ArgumentParser()
    add_model_options(parser)
    haar = detector_from_args(parser.parse_args(["--detector", "haar", "--min-face", "40", "--detect-side", "320",
                                                 "--detector-threshold", "2.5"]))
    assert isinstance(haar, HaarFaceDetector) and (haar.min_size, haar.max_side, haar.threshold) == (40, 320, 2.5)
    mtcnn = detector_from_args(parser.parse_args(["--min-face", "60", "--detector-threshold", "0.95"]))
    assert isinstance(mtcnn, MTCNNFaceDetector) and (mtcnn.min_size, mtcnn.threshold) == (60, 0.95)
    assert parser.parse_args([]).align and not parser.parse_args(["--no-align"]).align


def test_haar_boxes_carry_a_score_that_the_threshold_filters(face_photo):
    boxes = HaarFaceDetector()(face_photo)
    assert boxes and all(b.score is not None for b in boxes)
    assert HaarFaceDetector(threshold=max(b.score for b in boxes) + 1)(face_photo) == []


def test_an_aligned_crop_has_its_eyes_level_and_every_crop_is_square():
    image = np.zeros((200, 200), np.uint8)
    left, right = (70, 80), (130, 102)  # the right eye 22 px lower: a face turned about 20 degrees
    for x, y in (left, right):
        image[y - 2:y + 3, x - 2:x + 3] = 255
    box = Box(50, 50, 100, 100, 0.99, (left, right, (100, 110), (80, 130), (120, 135)))
    turned = crop(image, box, align=True)
    assert turned.shape == (120, 120)  # the box and its 10% margin
    rows = [np.argwhere(turned[:, half] > 128)[:, 0].mean() for half in (slice(0, 60), slice(60, 120))]
    assert abs(rows[0] - rows[1]) < 1.5, rows
    unturned = crop(image, box)  # align off: the plain crop
    assert unturned.shape == (120, 120) and unturned[80 - 40, 70 - 40] == 255
    tall = crop(image, Box(150, 20, 40, 100))  # 10% margin of 100 around the centre (170, 70); edges repeated
    assert tall.shape == (120, 120)


@pytest.mark.slow
@pytest.mark.skipif(not PHOTOS_DIR, reason="set FER_PHOTOS_DIR to a folder of photos with annotations.json")
def test_mtcnn_finds_the_faces_of_real_photos_that_haar_misses():
    results = bench_detect(["--photos", PHOTOS_DIR])
    mtcnn, haar = results["mtcnn"], results["haar"]
    assert mtcnn["recall"] >= 0.9 and mtcnn["precision"] >= 0.9, mtcnn
    assert mtcnn["false_positives_on_photos_without_faces"] == 0
    assert mtcnn["recall"] > haar["recall"] + 0.3, (mtcnn, haar)


@pytest.fixture
def face_photo() -> np.ndarray:
    """A synthetic face, 160 px, in a 640×480 gray photo: Haar finds it (MTCNN, trained on real faces, does not)."""
    import cv2

    from fer.data.synthetic import render_face

    face = render_face("happy", np.random.default_rng(0), 48)
    photo = np.full((480, 640), 128, np.uint8)
    photo[100:260, 200:360] = cv2.resize(face, (160, 160), interpolation=cv2.INTER_CUBIC)
    return photo



def test_crops_of_very_long_images_stay_small():
    """OpenCV's warp refuses images of 32,767 pixels a side (a 21 x 26,913 upload classified whole crashed it)."""
    assert crop(np.zeros((21, 26_913), np.uint8), Box(0, 0, 26_913, 21)).shape == (512, 512)
    tall = np.zeros((40_000, 100), np.uint8)
    tall[39_000:39_050, 10:60] = 255
    face = crop(tall, Box(10, 39_000, 50, 50, landmarks=((20, 39_010), (50, 39_010))), align=True)
    assert face.shape == (60, 60) and face[30, 30] == 255
