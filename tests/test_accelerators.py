"""Accelerator selection: the Ascend NPU wiring, mixed precision, channels_last, clear user errors.

The NPU tests are STRUCTURAL: a stand-in ``torch_npu`` module (installed in ``sys.modules`` for one
test by monkeypatch) answers ``is_available``/``device_count``/streams. They prove that Lightning is
handed NPU devices, an NPU autocast plugin and an hccl DDP strategy; they do not run NPU kernels.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import signal
import sys
import traceback
import types
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.accelerators import AcceleratorRegistry
from lightning.pytorch.plugins import MixedPrecision
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

from lit_transfer.accelerators import NPUAccelerator, NPUDDPStrategy, parse_npu_ids, prepare_trainer_kwargs
from lit_transfer.callbacks.channels_last import ChannelsLast, channels_last_pays
from lit_transfer.cli import LitTransferCLI
from lit_transfer.errors import UserError
from tests.conftest import REPO, exit_message, tiny_demo_args


class FakeStream:
    pass


class FakeNPUGradScaler(torch.amp.GradScaler):
    """Stands in for torch_npu's GradScaler (which reads the NPU's overflow flag)."""

    def __init__(self) -> None:
        super().__init__("npu")


def fake_torch_npu(count: int) -> types.ModuleType:
    """A stand-in for ``torch_npu`` with ``count`` devices that records device and stream calls."""
    module = types.ModuleType("torch_npu")
    state = {"stream": "default", "set_device": []}

    @contextlib.contextmanager
    def stream(s):
        previous, state["stream"] = state["stream"], s
        try:
            yield
        finally:
            state["stream"] = previous

    module.npu = types.SimpleNamespace(
        is_available=lambda: count > 0,
        device_count=lambda: count,
        set_device=lambda device: state["set_device"].append(device),
        Stream=FakeStream,
        stream=stream,
        current_stream=lambda: state["stream"],
        empty_cache=lambda: None,
        memory_stats=lambda device: {},
        amp=types.SimpleNamespace(GradScaler=FakeNPUGradScaler),
    )
    module.state = state
    return module


def install_fake_torch_npu(count: int) -> types.ModuleType:
    """Put a fake ``torch_npu`` with ``count`` devices in ``sys.modules`` and, like the real one, name
    torch's PrivateUse1 device type ``npu`` so that ``torch.device("npu", 0)`` exists."""
    if torch._C._get_privateuse1_backend_name() != "npu":
        torch.utils.rename_privateuse1_backend("npu")
    module = fake_torch_npu(count)
    sys.modules["torch_npu"] = module
    return module


def run_forked(body, timeout_s: int = 120) -> None:
    """Run ``body`` in a forked child and fail with its traceback.

    torch cannot undo the PrivateUse1 rename, and once renamed ``torch.accelerator`` reports an "npu"
    accelerator, which breaks every later optimizer step in this process; the child takes that
    (and the fake module) with it when it exits."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        signal.alarm(timeout_s)
        status, report = 0, ""
        try:
            body()
        except BaseException:  # noqa: BLE001 - everything goes back to the parent
            status, report = 1, traceback.format_exc()
        with os.fdopen(write_fd, "w") as pipe:
            pipe.write(report)
        os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        report = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status != 0:
        pytest.fail(report or f"the forked test process ended with status {status}", pytrace=False)


def npu_structural(count: int = 4):
    """Decorator: run the test in a forked process that has a fake ``torch_npu`` with ``count`` devices."""

    def decorate(test):
        @functools.wraps(test)
        def wrapper(*args, **kwargs):
            def body():
                install_fake_torch_npu(count)
                test(*args, **kwargs)

            run_forked(body)

        return wrapper

    return decorate


def build(tmp_path: Path, *extra: str) -> LitTransferCLI:
    """The CLI's model, data and Trainer for the tiny demo, without running a subcommand."""
    return LitTransferCLI(args=tiny_demo_args(tmp_path, *extra), run=False)


# --- registration and device parsing -----------------------------------------------------------


def test_npu_is_registered_and_torch_npu_not_imported():
    """Structural: importing the CLI registers "npu" in Lightning's registry without importing torch_npu."""
    import lit_transfer.cli  # noqa: F401

    assert AcceleratorRegistry["npu"]["accelerator"] is NPUAccelerator
    assert isinstance(AcceleratorRegistry.get("npu"), NPUAccelerator)
    if importlib.util.find_spec("torch_npu") is None:
        assert "torch_npu" not in sys.modules
        assert not NPUAccelerator.is_available()  # False, never an error
        assert "torch_npu" not in sys.modules


@pytest.mark.parametrize(
    ("devices", "ids"),
    [
        (1, [0]),
        (3, [0, 1, 2]),
        ("2", [0, 1]),
        (-1, [0, 1, 2, 3]),
        ("-1", [0, 1, 2, 3]),
        ("auto", [0, 1, 2, 3]),
        ("0,2", [0, 2]),
        ("3,", [3]),
        ([1, 3], [1, 3]),
        ("[2]", [2]),
    ],
)
@npu_structural()
def test_parse_npu_ids(devices, ids):
    """Structural: Lightning's GPU meanings of ``devices`` for NPUs (count, -1, auto, id lists)."""
    assert parse_npu_ids(devices) == ids
    assert NPUAccelerator.get_parallel_devices(ids) == [torch.device("npu", i) for i in ids]


@pytest.mark.parametrize(
    ("devices", "message"),
    [
        (5, "asked for 5 NPUs but 4 are visible"),
        ([4], "no NPU with id 4"),
        ("0,0", "repeated"),
        (0, "positive count"),
        ("two", "expected a count"),
        (True, "expected a count"),
        ([], "no NPU is visible"),
        (-2, "positive count"),
    ],
)
@npu_structural()
def test_parse_npu_ids_refuses(devices, message):
    """Structural: impossible device requests are a UserError naming the problem."""
    with pytest.raises(UserError, match=message):
        parse_npu_ids(devices)


# --- Lightning's wrong defaults for a custom accelerator, and their fix -------------------------------


@npu_structural()
def test_lightning_default_single_device_is_cpu_and_fails_loudly():
    """Structural: plain ``Trainer(accelerator="npu")`` gets Lightning's SingleDeviceStrategy("cpu"); the NPU
    accelerator refuses that device instead of silently training on the CPU."""
    trainer = Trainer(accelerator="npu", devices=1, logger=False)
    assert trainer.strategy.root_device == torch.device("cpu")  # Lightning's default for unknown accelerators
    with pytest.raises(UserError, match="prepare_trainer_kwargs"):
        trainer.strategy.accelerator.setup_device(trainer.strategy.root_device)


@npu_structural()
def test_single_npu_from_cli(tmp_path):
    """Structural: ``--trainer.accelerator npu --trainer.devices [1]`` puts the model on ``npu:1``."""
    cli = build(tmp_path, "--trainer.accelerator", "npu", "--trainer.devices", "[1]")
    strategy = cli.trainer.strategy
    assert isinstance(cli.trainer.accelerator, NPUAccelerator)
    assert type(strategy) is SingleDeviceStrategy
    assert strategy.root_device == torch.device("npu", 1)
    strategy.accelerator.setup_device(strategy.root_device)
    assert sys.modules["torch_npu"].state["set_device"] == [torch.device("npu", 1)]


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
@npu_structural()
def test_mixed_precision_autocasts_on_npu(tmp_path, precision):
    """Structural: Lightning builds CUDA autocast for an unknown accelerator; the CLI gives the NPU's."""
    lightning_default = Trainer(accelerator="npu", devices=1, precision=precision, logger=False)
    assert lightning_default.precision_plugin.device == "cuda"

    cli = build(tmp_path, "--trainer.accelerator", "npu", "--trainer.precision", precision)
    plugin = cli.trainer.precision_plugin
    assert isinstance(plugin, MixedPrecision)
    assert plugin.device == "npu"
    assert plugin.precision == precision
    assert (plugin.scaler is not None) == (precision == "16-mixed")
    if plugin.scaler is not None:  # torch_npu's, which sees the overflows of saturation mode
        assert type(plugin.scaler) is FakeNPUGradScaler and plugin.scaler._device == "npu"


@npu_structural()
def test_a_torch_npu_without_its_own_grad_scaler_gets_torchs():
    from lit_transfer.accelerators.trainer_args import npu_grad_scaler

    assert type(npu_grad_scaler()) is FakeNPUGradScaler
    del sys.modules["torch_npu"].npu.amp
    scaler = npu_grad_scaler()
    assert type(scaler) is torch.amp.GradScaler and scaler._device == "npu"


@npu_structural()
def test_ddp_on_npus_uses_hccl(tmp_path, monkeypatch):
    """Structural: two NPUs give Lightning's DDP (NPUDDPStrategy), devices npu:0/npu:1, backend hccl."""
    cli = build(tmp_path, "--trainer.accelerator", "npu", "--trainer.devices", "2", "--trainer.strategy", "ddp")
    strategy = cli.trainer.strategy
    assert isinstance(strategy, NPUDDPStrategy) and isinstance(strategy, DDPStrategy)
    assert strategy.parallel_devices == [torch.device("npu", 0), torch.device("npu", 1)]
    assert strategy.root_device == torch.device("npu", 0)
    assert strategy.num_processes == 2

    # Lightning's own setup_distributed, with the process-group call recorded instead of made.
    calls = []
    monkeypatch.setattr(
        "lightning.pytorch.strategies.ddp._init_dist_connection", lambda env, backend, **kw: calls.append((backend, kw))
    )
    strategy.setup_distributed()
    assert calls and calls[0][0] == "hccl"
    assert strategy.process_group_backend == "hccl"


@npu_structural()
def test_npu_ddp_strategy_from_class_path(tmp_path):
    """Structural: the strategy class can also be named in YAML/CLI, with DDP options."""
    spec = '{"class_path": "lit_transfer.accelerators.NPUDDPStrategy", "init_args": {"find_unused_parameters": true}}'
    cli = build(tmp_path, "--trainer.accelerator", "npu", "--trainer.devices", "0,3", "--trainer.strategy", spec)
    strategy = cli.trainer.strategy
    assert isinstance(strategy, NPUDDPStrategy)
    assert strategy.parallel_devices == [torch.device("npu", 0), torch.device("npu", 3)]
    assert strategy._ddp_kwargs["find_unused_parameters"] is True
    assert strategy._get_process_group_backend() == "hccl"


@npu_structural()
def test_ddp_strategy_names_keep_their_options(tmp_path):
    """Structural: every ddp name maps to NPUDDPStrategy with Lightning's start method and options."""
    kwargs = prepare_trainer_kwargs(
        {"accelerator": "npu", "devices": 2, "strategy": "ddp_spawn_find_unused_parameters_true"}
    )
    strategy = kwargs["strategy"]
    assert isinstance(strategy, NPUDDPStrategy)
    assert strategy._start_method == "spawn"
    assert strategy._ddp_kwargs == {"find_unused_parameters": True}
    assert isinstance(prepare_trainer_kwargs({"accelerator": "npu", "devices": 2})["strategy"], NPUDDPStrategy)
    assert isinstance(
        prepare_trainer_kwargs({"accelerator": "npu", "devices": 1, "num_nodes": 2})["strategy"], NPUDDPStrategy
    )


@npu_structural()
def test_ddp_wraps_the_model_on_an_npu_stream(monkeypatch):
    """Structural: Lightning wraps DDP under torch.cuda.stream; on NPUs the NPU's own stream is used."""
    fake = sys.modules["torch_npu"]
    seen = {}

    def fake_ddp(module, device_ids=None, **kwargs):
        seen.update(stream=fake.npu.current_stream(), device_ids=device_ids)
        return module

    def no_cuda_stream(*args, **kwargs):
        raise AssertionError("a CUDA stream was opened")

    monkeypatch.setattr("lit_transfer.accelerators.npu.DistributedDataParallel", fake_ddp)
    monkeypatch.setattr(torch.cuda, "stream", no_cuda_stream)
    monkeypatch.setattr(torch.cuda, "Stream", no_cuda_stream)
    strategy = NPUDDPStrategy(parallel_devices=[torch.device("npu", 0), torch.device("npu", 1)])
    strategy._setup_model(torch.nn.Linear(2, 2))
    assert isinstance(seen["stream"], FakeStream)
    assert seen["device_ids"] == [0]
    assert fake.npu.current_stream() == "default"


@npu_structural()
def test_auto_picks_the_npu_only_when_it_is_there(monkeypatch):
    """Structural: ``auto`` on an NPU-only machine means all NPUs; elsewhere it is Lightning's own auto."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    kwargs = prepare_trainer_kwargs({"accelerator": "auto", "devices": "auto"})
    assert kwargs["accelerator"] == "npu" and kwargs["devices"] == [0, 1, 2, 3]
    assert isinstance(kwargs["strategy"], NPUDDPStrategy)

    monkeypatch.setitem(sys.modules, "torch_npu", None)  # not installed
    assert prepare_trainer_kwargs({"accelerator": "auto"}) == {"accelerator": "auto"}


def test_other_accelerators_pass_unchanged():
    """cpu/gpu arguments are Lightning's business: prepare_trainer_kwargs leaves them alone."""
    for kwargs in (
        {"accelerator": "cpu", "precision": "bf16-mixed"},
        {"accelerator": "gpu", "devices": 2, "strategy": "fsdp"},
    ):
        assert prepare_trainer_kwargs(kwargs) == kwargs
    assert "torch_npu" not in sys.modules


# --- user mistakes: one line, exit 2 ----------------------------------------------------------------


def test_npu_without_torch_npu_is_a_clear_error(run_cli, capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_npu", None)  # as if not installed, even where it is
    line = exit_message(run_cli, capsys, "fit", *tiny_demo_args(tmp_path, "--trainer.accelerator", "npu"))
    assert "torch_npu" in line and "not installed" in line
    assert not list(tmp_path.glob("lightning_logs/*/version_*"))


@npu_structural(count=0)
def test_npu_without_a_device_is_a_clear_error(run_cli, capsys, tmp_path):
    """Structural: torch_npu present but no device."""
    line = exit_message(run_cli, capsys, "fit", *tiny_demo_args(tmp_path, "--trainer.accelerator", "npu"))
    assert "sees no NPU device" in line


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--trainer.devices", "[7]"], "no NPU with id 7"),
        (
            ["--trainer.devices", "2", "--trainer.strategy", "fsdp"],
            "fsdp is not supported with --trainer.accelerator npu",
        ),
        (["--trainer.devices", "2", "--trainer.strategy", "deepspeed_stage_2"], "deepspeed_stage_2 is not supported"),
        (
            ["--trainer.strategy", '{"class_path": "lightning.pytorch.strategies.FSDPStrategy"}'],
            "FSDPStrategy is not supported",
        ),
        (["--trainer.strategy", '{"class_path": "lightning.pytorch.strategies.DDPStrategy"}'], "use the name 'ddp'"),
        (["--trainer.strategy", "ddp_npu"], "not a known strategy"),
    ],
)
@npu_structural()
def test_npu_user_mistakes(run_cli, capsys, tmp_path, flags, message):
    """Structural: bad NPU ids and strategies without NPU support end in one line and exit 2."""
    line = exit_message(run_cli, capsys, "fit", *tiny_demo_args(tmp_path, "--trainer.accelerator", "npu", *flags))
    assert message in line


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--trainer.accelerator", "npx"], "invalid accelerator name"),
        (["--trainer.accelerator", "cpu", "--trainer.devices", "0"], "not a valid input"),
        (["--trainer.accelerator", "cpu", "--trainer.strategy", "nonsense"], "invalid strategy name"),
    ],
)
def test_lightning_flag_errors_are_one_line(run_cli, capsys, tmp_path, flags, message):
    line = exit_message(run_cli, capsys, "fit", *tiny_demo_args(tmp_path, *flags))
    assert message in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_gpu_without_cuda_is_one_line(run_cli, capsys, tmp_path):
    line = exit_message(run_cli, capsys, "fit", *tiny_demo_args(tmp_path, "--trainer.accelerator", "gpu"))
    assert "No supported gpu backend found" in line


# --- configs/trainer snippets -------------------------------------------------------------------------


@npu_structural()
def test_trainer_config_snippets(tmp_path):
    """The snippets combine with a task config as a second --config (npu: structural)."""
    cpu = build(tmp_path, "--config", str(REPO / "configs/trainer/cpu.yaml"))
    assert cpu.trainer.accelerator.__class__.__name__ == "CPUAccelerator"
    assert cpu.trainer.max_epochs == 4  # the task config's settings survive the second --config

    npu_cli = build(tmp_path, "--config", str(REPO / "configs/trainer/npu.yaml"))
    assert npu_cli.trainer.strategy.root_device == torch.device("npu", 0)
    assert npu_cli.trainer.precision_plugin.device == "npu"

    import yaml

    gpu = yaml.safe_load((REPO / "configs/trainer/gpu.yaml").read_text())["trainer"]
    assert gpu["accelerator"] == "gpu" and gpu["precision"] == "16-mixed"


# --- channels_last -----------------------------------------------------------------------------------


class _Convs(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.seen = []
        self.conv.register_forward_pre_hook(lambda m, args: self.seen.append(args[0]))

    def forward(self, x):
        return self.conv(x)


def test_channels_last_converts_weights_and_inputs():
    module, callback = _Convs(), ChannelsLast(enabled=True)
    callback.setup(None, module, "fit")
    assert module.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not module.conv.weight.is_contiguous()
    module(torch.randn(2, 3, 8, 8))
    assert module.seen[-1].is_contiguous(memory_format=torch.channels_last)
    callback.teardown(None, module, "fit")
    module(torch.randn(2, 3, 8, 8))
    assert module.seen[-1].is_contiguous()


@pytest.mark.parametrize("flag, nhwc", [(None, True), ("auto", True), ("false", False), ("true", True)])
def test_channels_last_cli_option(run_cli, tmp_path, flag, nhwc):
    """``auto`` by default, which on the CPU trains the demo's convolutions in NHWC; ``false`` does not."""
    option = [] if flag is None else ["--channels_last.enabled", flag]
    cli = run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "1", *option))
    weight = cli.model.net.stem[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last) == nhwc
    assert "val/acc" in cli.trainer.callback_metrics


@pytest.mark.parametrize(
    "device, precision, pays",
    [
        ("cpu", "32-true", True),
        ("cpu", "bf16-mixed", True),
        ("cuda", "16-mixed", True),
        ("cuda", "bf16-mixed", True),
        ("cuda", "32-true", False),
        ("npu", "16-mixed", False),
        ("mps", "32-true", False),
    ],
)
def test_auto_channels_last_only_where_it_pays(device, precision, pays):
    assert channels_last_pays(device, precision) is pays


# --- real hardware (skipped without it) -------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_gpu_mixed_precision_fit(run_cli, tmp_path, precision):
    flags = [
        "--trainer.max_epochs",
        "1",
        "--trainer.accelerator",
        "gpu",
        "--trainer.devices",
        "1",
        "--trainer.precision",
        precision,
        "--channels_last.enabled",
        "true",
    ]
    cli = run_cli("fit", *tiny_demo_args(tmp_path, *flags))
    assert cli.trainer.strategy.root_device.type == "cuda"
    assert cli.trainer.precision_plugin.device == "cuda"
    assert torch.isfinite(cli.trainer.callback_metrics["val/loss"])


def _real_npu() -> bool:
    from lit_transfer.accelerators.npu import npu_device_count

    return npu_device_count() > 0


@pytest.mark.skipif(not _real_npu(), reason="needs an Ascend NPU with torch_npu")
def test_npu_mixed_precision_fit(run_cli, tmp_path):
    cli = run_cli(
        "fit",
        *tiny_demo_args(
            tmp_path,
            "--trainer.max_epochs",
            "1",
            "--trainer.accelerator",
            "npu",
            "--trainer.devices",
            "1",
            "--trainer.precision",
            "16-mixed",
        ),
    )
    assert cli.trainer.strategy.root_device.type == "npu"
    assert torch.isfinite(cli.trainer.callback_metrics["val/loss"])


@pytest.mark.parametrize("precision", ["bf16-true", "16-true"])
def test_true_half_precision_trains_validates_and_predicts(precision, tmp_path, run_cli):
    """Lightning casts a batch to the run's dtype before the data module's hook turns the uint8 images
    into the net's float input; that input must be cast too, or a half net gets float32."""
    from tests.conftest import last_checkpoint, tiny_demo_args

    cli = run_cli("fit", *tiny_demo_args(tmp_path, "--trainer.max_epochs", "1", "--trainer.precision", precision))
    dtype = {"bf16-true": torch.bfloat16, "16-true": torch.float16}[precision]
    assert next(cli.model.net.parameters()).dtype == dtype
    if precision == "bf16-true":  # fp16 with Adam's eps (1e-8, 0 in fp16) diverges: the numbers, not the code path
        assert torch.isfinite(cli.trainer.callback_metrics["val/loss"])
    state = torch.load(last_checkpoint(tmp_path), weights_only=True)["state_dict"]
    assert state["net.head.weight"].dtype == dtype
