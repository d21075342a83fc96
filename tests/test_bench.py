import json
import time

import pytest

from fer.bench import interleaved_latency_ms
from fer.cli import main


@pytest.mark.slow
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
    # the hardware ceiling: matrix-multiply rate over the seed network's training FLOPs (0.43 GMACs forward)
    assert abs(summary["forward_gmacs_per_image"] - 0.43) < 0.01
    rate, ceiling = summary["matmul_gflops"]["32-true"], summary["ceiling_images_per_s"]["32-true"]
    assert rate > 0 and abs(ceiling - rate / (6 * summary["forward_gmacs_per_image"])) < 0.1


def test_interleaved_latency_takes_turns_and_shows_a_slow_round():
    calls = []

    def a() -> None:
        if 3 <= calls.count("a") < 6:  # a's second round (1 warm-up + 2 timed calls a round)
            time.sleep(0.005)
        calls.append("a")

    rows = interleaved_latency_ms({"a": a, "b": lambda: calls.append("b")}, calls=6, rounds=3, warmup=1)
    assert calls == (["a"] * 3 + ["b"] * 3) * 3
    assert len(rows["a"]["round_p50_ms"]) == len(rows["b"]["round_p50_ms"]) == 3
    slow = rows["a"]["round_p50_ms"][1]
    assert slow >= 5 > max(rows["a"]["round_p50_ms"][0], rows["a"]["round_p50_ms"][2], *rows["b"]["round_p50_ms"])
    assert rows["a"]["p50_ms"] < slow <= rows["a"]["p99_ms"]


@pytest.mark.slow
def test_bench_detect_reports_recall(tiny_tree, capsys):
    main(["bench", "detect", "--split_dir", str(tiny_tree / "validation"), "--samples", "5"])
    out = capsys.readouterr().out
    results = json.loads(out[out.index("{\n"):])  # a line per detector as it finishes, then all of them
    assert set(results) == {"mtcnn", "haar"}
    for result in results.values():
        assert result["samples"] == 5 and 0 <= result["recall"] <= 1 and result["ms_per_640x480_image"] > 0


@pytest.mark.slow
def test_bench_infer_reports_latency_of_each_runtime_and_pipeline_fps(trained, tiny_tree, tmp_path, capsys):
    ckpt = tmp_path / "m.ckpt"
    trained[0].save(str(ckpt))
    main(["bench", "infer", "--ckpt", str(ckpt), "--runs", "5", "--batch", "4", "--frames", "6",
          "--calibration_data", str(tiny_tree)])
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{\n"):])
    runtimes = {"eager", "torchscript", "onnxruntime", "onnxruntime_int8"}
    if "openvino" in result:  # why OpenVINO was not measured
        assert result["pipeline"]["classifier"] == "onnxruntime_int8"
    else:
        runtimes |= {"onnxruntime_openvino", "onnxruntime_openvino_int8"}
        assert result["pipeline"]["classifier"] == "onnxruntime_openvino_int8"
    assert set(result["runtimes"]) == runtimes
    for row in result["runtimes"].values():
        assert 0 < row["p50_ms"] <= row["p99_ms"] and row["batch_images_per_s"] > 0
        assert len(row["round_p50_ms"]) == 5
    assert result["pipeline"]["frames"] == 6 and result["pipeline"]["frames_per_s"] > 0
    estimate = result["fp32_estimate"]
    assert estimate["forward_gmacs_per_face"] == 0.4298  # the seed CNN, no mirror image
    expected = 2 * estimate["forward_gmacs_per_face"] / estimate["fp32_matmul_gflops_1_thread"] * 1000
    assert abs(estimate["fp32_ms_at_matmul_rate"] - expected) < 0.01


@pytest.mark.slow
def test_bench_serve_holds_a_short_load_without_errors(trained, tmp_path, capsys):
    ckpt = tmp_path / "m.ckpt"
    trained[0].save(str(ckpt))
    main(["bench", "serve", "--ckpt", str(ckpt), "--clients", "3", "--seconds", "2"])
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{"):])
    assert result["errors"] == 0 and result["requests"] >= 3
    assert 0 < result["p50_ms"] <= result["p99_ms"] and result["requests_per_s"] > 0
    assert result["rss_mb"]["end"] > 0


def test_bench_models_times_each_int8_export_in_turns_beside_its_cost(trained, tiny_tree, tmp_path, capsys):
    from fer.bench import face_gmacs
    from fer.hardware import machine_facts, machine_label

    ckpt = tmp_path / "m.ckpt"
    trained[0].save(str(ckpt))
    main(["bench", "models", "--ckpt", "fast", str(ckpt), "--calibration_data", str(tiny_tree), "--runs", "6",
          "--rounds", "2", "--batch", "4"])
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{\n"):])
    assert result["machine"] == machine_label(machine_facts())
    assert list(result["models"]) == ["fast", str(ckpt)]
    fast, mine = result["models"]["fast"], result["models"][str(ckpt)]
    assert fast["gmacs_per_face"] == 0.09 and fast["file_mb"] == 1.8  # one view of 0.09 GMACs, as shipped
    assert mine["gmacs_per_face"] == round(face_gmacs(trained[0].module), 4)
    for row in (fast, mine):
        assert 0 < row["p50_ms"] <= row["p99_ms"] and len(row["round_p50_ms"]) == 2 and row["batch_faces_per_s"] > 0
