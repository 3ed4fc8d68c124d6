"""Every torchvision classification family trains through ``TorchvisionNet``: GoogLeNet's and Inception
v3's auxiliary classifiers (on with their loss weights, or off), SqueezeNet's convolutional classifier,
the smallest input a model takes said in one line, and GoogLeNet's/Inception's input normalisation."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torchvision
from lightning.pytorch import Trainer
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lit_transfer.errors import UserError
from lit_transfer.models import ImageClassifier
from lit_transfer.nets import TorchvisionNet
from tests.conftest import catsdogs_resnet18_args, exit_message

# The smallest member of every family torchvision has.
FAMILIES = [
    "alexnet",
    "convnext_tiny",
    "densenet121",
    "efficientnet_b0",
    "efficientnet_v2_s",
    "googlenet",
    "inception_v3",
    "maxvit_t",
    "mnasnet0_5",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "regnet_x_400mf",
    "resnet18",
    "resnext50_32x4d",
    "shufflenet_v2_x0_5",
    "squeezenet1_1",
    "swin_t",
    "swin_v2_t",
    "vgg11",
    "vit_b_16",
    "wide_resnet50_2",
]


def test_the_families_cover_every_torchvision_family():
    names = torchvision.models.list_models(module=torchvision.models)
    family = {name: name.rstrip("0123456789_").split("_")[0].rstrip("0123456789") for name in names}
    assert {family[name] for name in FAMILIES} == set(family.values())


def quiet(**kwargs) -> Trainer:
    return Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **kwargs
    )


# The families that take 224 px images at the least train a step in 9 to 13 s each here: with -m slow.
AT_224_PX = {"maxvit_t", "swin_v2_t", "vit_b_16"}


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=pytest.mark.slow) if name in AT_224_PX else name for name in FAMILIES]
)
def test_each_family_trains_a_step_and_predicts(name):
    aux = name in ("googlenet", "inception_v3")
    net = partial(TorchvisionNet, name=name, aux_logits=aux)
    torch.manual_seed(0)
    model = ImageClassifier(net, num_classes=3, optimizer=partial(torch.optim.SGD, lr=0.01))
    size = max(32, model.net.min_image_size)
    x, y = torch.rand(4, 3, size, size), torch.tensor([0, 2, 1, 0])
    head = model.net.get_classifier()
    before = [p.detach().clone() for p in head.parameters()]
    quiet(fast_dev_run=1).fit(model, DataLoader(TensorDataset(x, y), batch_size=4))
    assert any(not torch.equal(a, b) for a, b in zip(before, head.parameters()))  # the head trained
    with torch.no_grad():
        out = model.eval().predict_step((x, ["a.png", "b.png", "c.png", "d.png"]), 0)
    # Shapes only: a randomly initialised net one step in may overflow on its BatchNorm's running
    # statistics (RegNet does at 32 px), which says nothing about the code path.
    assert out["all_probabilities"].shape == (4, 3) and len(out["class_names"]) == 4


def test_googlenet_trains_its_auxiliary_classifiers_at_their_loss_weights():
    torch.manual_seed(0)
    model = ImageClassifier(partial(TorchvisionNet, name="googlenet", aux_logits=True), num_classes=3)
    x, y = torch.rand(2, 3, 64, 64), torch.tensor([0, 2])
    logits, aux = model.training_outputs(x)
    assert [w for w, _ in aux] == [0.3, 0.3] and all(a.shape == (2, 3) for _, a in aux)
    torch.manual_seed(1)  # the same dropout draws in both forwards
    loss = model.training_step((x, y), 0)
    torch.manual_seed(1)
    logits, aux = model.training_outputs(x)
    expected = F.cross_entropy(logits, y) + sum(w * F.cross_entropy(a, y) for w, a in aux)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert model.eval()(x).shape == (2, 3)  # evaluation: the main classifier alone


def test_without_aux_logits_the_nets_have_no_auxiliary_classifiers():
    for name in ("googlenet", "inception_v3"):
        net = TorchvisionNet(3, name=name)
        assert net.aux_loss_weights == [] and not any("aux" in n.lower() for n, _ in net.named_parameters())
    with pytest.raises(UserError, match="aux_logits is for googlenet and inception_v3"):
        TorchvisionNet(3, name="resnet18", aux_logits=True)


def test_squeezenet_has_a_convolutional_head_that_splits_from_its_features():
    net = TorchvisionNet(4, name="squeezenet1_1").eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = net(x)
        assert out.shape == (2, 4)
        assert torch.allclose(net.forward_head(net.forward_features(x)), out)
    assert net.head_name == "model.classifier.1"
    assert net.get_classifier()[0].out_channels == 4
    appended = TorchvisionNet(4, name="squeezenet1_1", head="append")
    assert appended.head.in_features == 1000


def test_images_smaller_than_a_net_takes_are_one_line(class_folder, tmp_path, run_cli, capsys):
    with pytest.raises(UserError, match="inception_v3 takes images of at least 75x75 pixels and gets 32x32"):
        TorchvisionNet(2, name="inception_v3")(torch.rand(1, 3, 32, 32))
    args = catsdogs_resnet18_args(
        class_folder, tmp_path, "--model.net.init_args.name", "inception_v3", "--model.param_groups", "null"
    )
    line = exit_message(run_cli, capsys, *args)
    assert "inception_v3 takes images of at least 75x75 pixels and gets 32x32: set --data.image_size 75 or more" in line


def test_googlenet_weights_get_the_input_normalisation_they_were_trained_with():
    """torchvision's GoogLeNet given its weights converts ImageNet-normalised input (transform_input);
    ours, built without, gets images normalised to (x - 0.5) / 0.5: the same net input."""
    from torchvision.models import get_weight

    from lit_transfer.preprocessing import Normalize, Preprocessing

    expected = Preprocessing.of_torchvision(get_weight("GoogLeNet_Weights.IMAGENET1K_V1"))
    torch.manual_seed(0)
    theirs = torchvision.models.googlenet(weights=None, aux_logits=False, transform_input=True, init_weights=True)
    ours = TorchvisionNet(1000, name="googlenet")
    ours.model.load_state_dict(theirs.state_dict())
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    imagenet = Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    with torch.no_grad():
        torchvision_out = theirs.eval()(imagenet(images))
        our_out = ours.eval()(Normalize(expected.mean, expected.std)(images))
    assert torch.allclose(torchvision_out, our_out, atol=1e-4)
