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
