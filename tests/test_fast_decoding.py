"""The fast image loader (``load_image``) and the presets' ``decode_size`` and uint8 fast path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as v1
from torchvision.transforms import v2 as T
from torchvision.transforms.v2.functional import pil_to_tensor

from lit_transfer.data import images
from lit_transfer.data.images import EXIF_ORIENTATION, REDUCING_GAP, image_loader, load_image, load_rgb
from lit_transfer.data.presets import ClassificationPresetEval, ClassificationPresetTrain
from lit_transfer.preprocessing import Normalize
from tests.test_folder_data import write_all_modes


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth colours plus noise: a JPEG with detail at every scale."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 0.7 + y * 0.3) % 256, (y * 0.9) % 256, (x * 0.4) % 256], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8))


@pytest.fixture(params=["torchcodec", "pillow"])
def jpeg_decoder(request, monkeypatch) -> str:
    """``load_image`` both ways: with TorchCodec's decoder (where it loads) and with PIL's, its fallback."""
    if request.param == "pillow":
        monkeypatch.setattr(images, "decode_jpeg", None)
    elif images.decode_jpeg is None:
        pytest.skip(images.JPEG_DECODER)
    return request.param


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_a_jpeg_decodes_to_the_same_pixels_as_pil(tmp_path, mode, jpeg_decoder):
    path = tmp_path / "photo.jpg"
    photo(70, 50).convert(mode).save(path, quality=90)
    image = load_image(path)
    assert image.dtype == torch.uint8 and image.shape == (3, 50, 70)
    assert torch.equal(image, pil_to_tensor(load_rgb(path)))


@pytest.mark.parametrize("orientation", [1, 6])
def test_a_jpeg_with_an_exif_orientation_is_not_turned_as_pil_does_not_turn_it(tmp_path, orientation, jpeg_decoder):
    path = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation  # 6: "turn 90 degrees", which TorchCodec's decoder would apply
    photo(70, 50).save(path, quality=90, exif=exif)
    image = load_image(path)
    assert image.shape == (3, 50, 70)
    assert torch.equal(image, pil_to_tensor(load_rgb(path)))


def test_every_mode_loads_as_the_same_rgb_pixels_as_load_rgb(tmp_path, jpeg_decoder):
    for mode, path in write_all_modes(tmp_path / "modes").items():
        image = load_image(path)
        assert image.shape == (3, 16, 20), mode
        assert torch.equal(image, pil_to_tensor(load_rgb(path))), mode


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_that_keeps_the_gap(tmp_path, jpeg_decoder):
    path = tmp_path / "large.jpg"
    photo(800, 600).save(path, quality=90)
    assert load_image(path).shape == (3, 600, 800)  # no size given: full size
    # keeps a short side >= REDUCING_GAP * min_size = 200: 600 // 200 = 3 -> the 1/2 scale
    reduced = load_image(path, min_size=100)
    assert REDUCING_GAP == 2 and reduced.shape == (3, 300, 400)
    full = torch.nn.functional.interpolate(load_image(path)[None].float(), size=(300, 400), mode="area")[0]
    assert (reduced.float() - full).abs().mean() < 6  # levels (of 255): the same picture, smaller
    assert load_image(path, min_size=200).shape == (3, 600, 800)  # 600 < 2 * 400: not reduced


def test_presets_get_the_tensor_loader_other_transforms_pil(tmp_path):
    assert image_loader(v1.Compose([v1.ToTensor()])) is load_rgb
    loader = image_loader(ClassificationPresetEval(224))
    path = tmp_path / "p.jpg"
    photo(30, 20).save(path)
    assert loader.keywords == {"min_size": 256} and isinstance(loader(path), torch.Tensor)


def test_decode_sizes_keep_every_crop_at_full_detail():
    assert ClassificationPresetEval(224).decode_size == 256
    assert ClassificationPresetTrain(224, augment="none").decode_size == 256
    assert ClassificationPresetTrain(224, augment="flip", resize_size=240).decode_size == 240
    assert ClassificationPresetTrain(32, augment="crop_flip").decode_size == 0
    # RandomResizedCrop's smallest crop: 8 % of the area at aspect 3/4, a side of 0.245 of the short side
    assert ClassificationPresetTrain(224).decode_size == 915


@pytest.mark.parametrize("augment", ["imagenet", "crop_flip", "flip", "none"])
def test_a_uint8_tensor_a_pil_image_and_a_float_tensor_give_the_same_uint8_output(augment):
    pixels = torch.randint(0, 256, (3, 24, 24), dtype=torch.uint8)
    preset = ClassificationPresetTrain(24, resize_size=24, augment=augment, padding=0)
    outputs = []
    for image in (pixels, Image.fromarray(pixels.permute(1, 2, 0).numpy()), pixels.float() / 255):
        torch.manual_seed(0)  # the same crop and flip for each
        outputs.append(preset(image))
    fast, from_pil, from_float = outputs
    assert type(fast) is torch.Tensor and fast.dtype == torch.uint8 and fast.shape == (3, 24, 24)
    assert torch.equal(fast, from_pil) and torch.equal(fast, from_float)


def test_normalize_turns_a_uint8_batch_into_the_nets_input_and_leaves_features_alone():
    normalize = Normalize(mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.25))
    batch = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    expected = T.Normalize((0.5, 0.4, 0.3), (0.2, 0.3, 0.25))(T.ToDtype(torch.float32, scale=True)(batch))
    torch.testing.assert_close(normalize(batch), expected, rtol=0, atol=1e-5)
    features = torch.randn(2, 16)
    assert normalize(features) is features


def test_the_training_presets_random_steps_give_torchvisions_crops_and_flips_exactly():
    # a decoded image: HWC memory seen as CHW, as load_image and PIL's ToImage give it
    image = torch.randint(0, 256, (90, 120, 3), dtype=torch.uint8).permute(2, 0, 1)
    ours = ClassificationPresetTrain(48)
    theirs = T.Compose([T.RandomResizedCrop(48, antialias=True), T.RandomHorizontalFlip()])
    flipped = set()
    for seed in range(8):
        torch.manual_seed(seed)
        mine = ours(image)
        torch.manual_seed(seed)
        assert torch.equal(mine, theirs(image))
        flipped.add(torch.equal(mine, ours.transforms[0].transform(image, _same_crop(seed, ours))))
    assert flipped == {True, False}  # both branches of the flip were taken


def _same_crop(seed: int, preset) -> dict:
    torch.manual_seed(seed)
    return preset.transforms[0].make_params([torch.zeros(3, 90, 120)])
