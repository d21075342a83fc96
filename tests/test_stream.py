import copy

import cv2
import numpy as np
import pytest
from PIL import Image

from fer.cli import main
from fer.faces import Box
from fer.stream import Smoother, stream


@pytest.fixture(scope="module")
def video(tiny_tree, tmp_path_factory):
    """A 640×480, 12-frame video of one face drifting right across a gray background."""
    path = tmp_path_factory.mktemp("video") / "face.mp4"
    face = np.asarray(Image.open(tiny_tree / "test" / "happy" / "00000.png").resize((120, 120)))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (640, 480))
    for i in range(12):
        frame = np.full((480, 640), 100, np.uint8)
        frame[150:270, 100 + 10 * i:220 + 10 * i] = face
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def test_smoother_averages_a_face_over_its_last_frames_and_keeps_faces_apart():
    smoother = Smoother(window=2)
    a, b = Box(0, 0, 50, 50), Box(200, 0, 50, 50)
    smoother([a, b], np.array([[1.0, 0.0], [0.0, 1.0]]))
    out = smoother([Box(5, 0, 50, 50), b], np.array([[0.0, 1.0], [0.0, 1.0]]))
    np.testing.assert_allclose(out, [[0.5, 0.5], [0.0, 1.0]])  # the moved face is the same face
    out = smoother([Box(5, 0, 50, 50)], np.array([[0.0, 1.0]]))
    np.testing.assert_allclose(out, [[0.0, 1.0]])  # window 2: the first frame has left the average


def test_stream_annotates_every_frame_of_a_video_file(trained, video, tmp_path):
    r = copy.copy(trained[0])
    r.detector = lambda gray: [Box(100, 150, 120, 120)]  # a plugged-in detector
    out = tmp_path / "annotated.mp4"
    stats = r.predict_realtime(str(video), output=str(out), show=False)
    assert stats["frames"] == 12 and stats["faces"] == 12 and stats["fps"] > 0
    written = cv2.VideoCapture(str(out))
    assert int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    ok, frame = written.read()
    assert ok and frame.shape == (480, 640, 3)
    green = (frame[..., 1].astype(int) - frame[..., 0].astype(int)) > 60
    assert green.sum() > 400  # the green box and bar were drawn onto the gray video


def test_stream_stops_after_max_frames_and_rejects_a_missing_source(trained, video, tmp_path):
    assert stream(trained[0], str(video), max_frames=3)["frames"] == 3
    with pytest.raises(FileNotFoundError, match="Cannot open video source"):
        stream(trained[0], str(tmp_path / "missing.mp4"))


def test_stream_command_writes_the_output(trained, video, tmp_path, capsys):
    ckpt = tmp_path / "m.ckpt"
    trained[0].save(str(ckpt))
    stats = main(["stream", "--source", str(video), "--output", str(tmp_path / "o.mp4"), "--ckpt", str(ckpt)])
    assert stats["frames"] == 12 and (tmp_path / "o.mp4").stat().st_size > 1000
    assert "12 frames" in capsys.readouterr().out


def test_showing_video_without_a_gui_says_what_to_do_instead(trained, video):
    if cv2.getBuildInformation().split("GUI:")[1].split()[0] != "NONE":
        pytest.skip("this OpenCV build has a GUI")
    with pytest.raises(RuntimeError, match="output="):
        stream(trained[0], str(video), show=True, max_frames=1)
