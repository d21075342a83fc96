import json

from fer.cli import main


def test_bench_train_prints_throughput_of_lightning_and_plain_loops(capsys):
    main(["bench", "train", "--config", "configs/quickstart.yaml", "--batches", "2", "--warmup", "1",
          "--precision", "32-true", "--channels_last", "true"])
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{\n"):])
    (run,) = summary["runs"]
    assert run["precision"] == "32-true" and run["channels_last"] is True
    for loop in ("lightning", "plain_pytorch"):
        assert run[loop]["images_per_s"] > 0
        assert 0 <= run[loop]["data_wait_share"] < 1
    assert run["lightning_vs_plain"] > 0


def test_bench_detect_reports_recall(tiny_tree, capsys):
    main(["bench", "detect", "--split_dir", str(tiny_tree / "validation"), "--samples", "5"])
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{"):])
    assert result["samples"] == 5 and 0 <= result["recall"] <= 1 and result["ms_per_640x480_image"] > 0
