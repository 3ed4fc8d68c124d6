"""Smoke tests of the benchmark suite on synthetic data: the code paths run, the table and the JSON
come out. No timing is asserted: the numbers of a tiny run on a busy machine mean nothing."""

from __future__ import annotations

import json

import pytest

from benchmarks import run


def test_the_suite_falls_back_to_synthetic_data_and_writes_its_json(tmp_path, capsys):
    out = tmp_path / "result.json"
    report = run.main(
        ["--quick", "--data", str(tmp_path / "absent"), "--only", "input_pipeline", "compute", "--out", str(out)]
    )

    printed = capsys.readouterr().out
    assert "synthetic images" in printed and "SYNTHETIC" in report["benchmarks"]["input_pipeline"]["report"]["data"]
    assert json.loads(out.read_text()) == report
    assert all(entry["status"] == 0 and entry["peak_rss_mib"] > 0 for entry in report["benchmarks"].values())
    rows = report["summary"]
    # the input pipeline twice (batches normalised on the GPU, on the CPU), then the compute benchmark
    assert [r["benchmark"] for r in rows] == ["input_pipeline", "input_pipeline", "compute"]
    assert rows[0]["goal"] == 2.0 and isinstance(rows[0]["met"], bool) and rows[0]["ratio"] > 0
    pipeline = report["benchmarks"]["input_pipeline"]["report"]
    assert pipeline["pixels"]["decode_max_abs_levels"] == 0  # libjpeg-turbo in both: the same pixels
    assert pipeline["accuracy"]["val_images"] > 0
    nets = report["benchmarks"]["compute"]["report"]["nets"]
    assert all(n["gflop_per_step"] > 0 and n["channels_last"]["gflops"] > 0 for n in nets)

    table = run.markdown(report)
    assert "| input_pipeline | JPEG" in table and "| SimpleCNN, demo, 32 px | 2 |" in table


@pytest.mark.slow
def test_the_whole_quick_suite_runs(tmp_path):
    report = run.main(["--quick", "--data", str(tmp_path / "absent"), "--out", str(tmp_path / "result.json")])
    assert [entry["status"] for entry in report["benchmarks"].values()] == [0] * len(run.BENCHMARKS)
    assert {r["benchmark"] for r in report["summary"]} == set(run.BENCHMARKS)
