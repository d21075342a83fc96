import copy

import cv2
import numpy as np
import pytest
from PIL import Image

from fer.cli import main
from fer.faces import Box
from fer.video import Smoother, stream


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


def test_min_face_is_in_the_frames_pixels_when_the_search_is_downscaled():
    from fer.data.synthetic import render_face
    from fer.faces import HaarFaceDetector

    frame = np.full((480, 640), 120, np.uint8)
    frame[160:320, 240:400] = cv2.resize(render_face("happy", np.random.default_rng(0), 48), (160, 160))
    assert HaarFaceDetector(max_side=640)(frame), "the 160-px face is found at full size"
    searched_at_half = [HaarFaceDetector(max_side=320, min_size=m)(frame) for m in (100, 200)]
    assert [len(boxes) for boxes in searched_at_half] == [1, 0]  # 100 px < 160 < 200 px, in the frame's pixels
    assert 130 < searched_at_half[0][0].w < 190  # and the box comes back in the frame's pixels


def test_a_strip_too_thin_to_downscale_is_searched_and_has_no_face():
    from fer.faces import HaarFaceDetector

    assert HaarFaceDetector(max_side=640)(np.zeros((21, 26_913), np.uint8)) == []  # 21 px scale to 0.5: one row


def test_stream_command_takes_the_face_search_options(trained, video, tmp_path, monkeypatch):
    import fer.stream

    seen = {}
    real = fer.stream.stream

    def spy(recognizer, *args, **kwargs):
        seen.update(side=recognizer.detector.max_side, min_face=recognizer.detector.min_size)
        return real(recognizer, *args, **kwargs)

    monkeypatch.setattr(fer.stream, "stream", spy)
    ckpt = tmp_path / "m.ckpt"
    trained[0].save(str(ckpt))
    main(["stream", "--source", str(video), "--output", str(tmp_path / "o.mp4"), "--ckpt", str(ckpt),
          "--detect-side", "320", "--min-face", "80", "--max-frames", "2"])
    assert seen == {"side": 320, "min_face": 80}
