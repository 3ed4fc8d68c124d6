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


def test_the_gpu_check_dry_run_asserts_and_writes_only_into_its_folder(tmp_path, monkeypatch):
    """``benchmarks/gpu_check.py --device cpu``: every check of the GPU check runs (the CPU stands in for the
    GPU) and holds, and all it writes is inside the folder it was given."""
    from benchmarks import gpu_check

    out = tmp_path / "out"
    monkeypatch.setenv("TMPDIR", str(out / "tmp"))
    assert gpu_check.main(["--out", str(out), "--device", "cpu", "--steps", "1", "--skip-tests"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    report = json.loads((out / "gpu_check.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert list(checks) == ["device", "channels_last auto rule", "training steps", "fit, resume, predict"]
    assert all(c["ok"] for c in checks.values()) and report["ok"]
    rows = checks["training steps"]["rows"]
    assert {(r["precision"], r["nhwc"]) for r in rows} == {
        (p, n) for p in ("32-true", "bf16-mixed") for n in (False, True)
    }
    assert checks["fit, resume, predict"]["nhwc"]  # the auto rule's choice on the CPU, found in the fit


def test_the_gpu_check_fails_on_a_wrong_rule_or_a_non_finite_loss(monkeypatch):
    import torch

    from benchmarks import gpu_check

    cpu = torch.device("cpu")
    monkeypatch.setattr("lit_transfer.callbacks.channels_last.channels_last_pays", lambda device, precision: False)
    assert not gpu_check.Checks().run("rule", lambda: gpu_check.auto_rule_check(cpu))["ok"]
    monkeypatch.setattr(gpu_check.F, "cross_entropy", lambda logits, y: logits.sum() * float("nan"))
    failed = gpu_check.Checks().run("steps", lambda: gpu_check.steps_check(cpu, ["32-true"], 1))
    assert not failed["ok"] and "non-finite loss" in failed["error"]


def test_the_gpu_checks_wheels_leave_out_what_the_preinstalled_torch_brings():
    """``gpu_check.sh --download-wheels``: what the install needs beside a preinstalled torch; what torch and
    torchvision require stays out, but not what another package asks of those as an extra."""
    from benchmarks.gpu_wheels import wheels_to_carry

    def item(name: str, *requires: str, requested: bool = False) -> dict:
        return {"metadata": {"name": name, "version": "1.0", "requires_dist": list(requires)}, "requested": requested}

    report = {
        "install": [
            item("lit_transfer", "torch>=2.6", "torchvision", "numpy>=1.24", "lightning", requested=True),
            item("torch", "sympy", "fsspec", "nvidia-cublas; platform_system == 'Linux'", "opt-einsum; extra == 'x'"),
            item("torchvision", "numpy", "torch", "pillow"),
            item("lightning", "fsspec[http]>=2022", "torchmetrics"),
            item("fsspec", "aiohttp; extra == 'http'"),
            item("pytest", "pluggy", "tomli; python_version < '3.11'", requested=True),
            *(item(name) for name in ("aiohttp", "sympy", "nvidia-cublas", "numpy", "pillow", "torchmetrics")),
            *(item(name) for name in ("pluggy", "tomli", "opt-einsum")),
        ]
    }
    carried = ["aiohttp==1.0", "lightning==1.0", "pluggy==1.0", "pytest==1.0", "torchmetrics==1.0"]
    assert wheels_to_carry(report, "3.12") == carried
    assert wheels_to_carry(report, "3.10") == sorted([*carried, "tomli==1.0"])
