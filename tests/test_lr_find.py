"""``lr_find``: Lightning's range test on the configured optimizer, its groups scaled together."""

from __future__ import annotations

import pytest
import torch

from lit_transfer.finetune.lr_find import SMOOTHING, tenth_of_minimum, unbiased
from tests.conftest import catsdogs_resnet18_args, exit_message, tiny_demo_args


def test_lr_find_suggests_a_rate_and_leaves_no_run_behind(tmp_path, run_cli, capsys):
    run_cli("lr_find", *tiny_demo_args(tmp_path, "--num_training", "40", "--max_lr", "0.1"))
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("lr finder: suggested lr")]
    suggested = float(line.split()[4])
    assert 1e-6 <= suggested <= 1.0 and "--model.lr_scheduler.init_args.max_lr" in line  # the demo uses OneCycleLR
    assert not list(tmp_path.rglob("*.ckpt"))  # not Lightning's temporary one, not ours
    (folder,) = (tmp_path / "lightning_logs" / "demo").iterdir()
    assert folder.name.startswith("lr_find-")  # its own folder, no new version_N
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (folder / "lr_find.png").stat().st_size > 0


def test_groups_keep_their_ratios_while_the_finder_searches(class_folder, tmp_path, run_cli, capsys, monkeypatch):
    seen: list[list[float]] = []
    real_step = torch.optim.SGD.step

    def recording_step(self, *args, **kwargs):
        seen.append([group["lr"] for group in self.param_groups])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    groups = "[{name: early, modules: [layer1, layer2], lr: 0.00001}, {name: head, modules: [head], lr: 0.001}]"
    args = catsdogs_resnet18_args(class_folder, tmp_path, "--model.param_groups", groups)
    run_cli("lr_find", *args[1:], "--num_training", "30", "--min_lr", "0.00001", "--max_lr", "0.05")
    assert len(seen) >= 20
    for early, default, head in seen:  # the default group: the optimizer's own lr, 0.001 in the config
        assert early / head == pytest.approx(0.01) and default / head == pytest.approx(1.0)
    assert seen[-1][2] > seen[0][2]  # the rate rose
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("lr finder: suggested"))
    assert "for group 'head' (configured 0.001)" in line and "early " in line


def test_lr_find_range_out_of_order_is_one_line(tmp_path, run_cli, capsys):
    line = exit_message(run_cli, capsys, "lr_find", *tiny_demo_args(tmp_path, "--min_lr", "0.1", "--max_lr", "0.01"))
    assert "0 < min_lr < max_lr" in line


def test_the_smoothed_losses_get_the_right_bias_correction():
    """Lightning divides the k-th running average by 1 - beta**(k + 2), one step too many."""
    raw = [1.0, 0.9, 1.1, 0.8, 0.7, 0.75, 0.6]
    beta, average, lightnings, meant = SMOOTHING, 0.0, [], []
    for k, loss in enumerate(raw):
        average = beta * average + (1 - beta) * loss
        lightnings.append(average / (1 - beta ** (k + 2)))
        meant.append(average / (1 - beta ** (k + 1)))
    assert lightnings[0] == pytest.approx(0.505, abs=1e-3)  # half the first loss
    assert unbiased(lightnings) == pytest.approx(meant)
    assert unbiased(lightnings)[0] == pytest.approx(raw[0])


def test_the_suggestion_is_a_tenth_of_the_rate_at_the_lowest_loss():
    lrs = [10 ** (-6 + k / 4) for k in range(25)]
    losses = [1.2 - 0.01 * k for k in range(20)] + [1.5, 2.0, 3.0, 4.0, 5.0]  # lowest at k = 19, then diverging
    losses[11] = 0.1  # a dip inside the skipped start would not count if it were there
    assert tenth_of_minimum(lrs, losses, skip_begin=12) == pytest.approx(lrs[19] / 10)
    assert tenth_of_minimum(lrs[:5], losses[:5]) is None  # too few points
