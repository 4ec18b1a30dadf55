"""Tests of fastvit.data: image loading, data configs, transforms (golden parity with timm), labels."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastvit.data import (
    ImageDecoder,
    create_decoder,
    create_transform,
    imagenet_classes,
    imagenet_synsets,
    load_image,
    resolve_data_config,
    resolve_model_data_config,
    split_per_batch,
    stack_images,
)
from fastvit.data.decoding import reduced_size_needed
from fastvit.data.loading import ImageReader
from fastvit.data.transforms import (
    CenterCrop,
    Compose,
    Normalize,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ResizeKeepRatio,
    ToTensor,
    _adjust_brightness,
    _adjust_contrast,
    _adjust_hue,
    _adjust_saturation,
)
from fastvit.errors import ImageLoadError

HERE = Path(__file__).parent
IMAGES = HERE / "images"
PHOTOS = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg")
GOLDEN = np.load(HERE / "golden" / "transforms.npz")
GOLDEN_CONFIGS = sorted({key.split("/")[0] for key in GOLDEN.files if key.endswith("/cfg")})
TOLERANCE = 1 / 255


def golden_pixels(key: str) -> np.ndarray:
    """A golden uint8 HWC array (stored as lossless WebP bytes)."""
    return np.array(Image.open(io.BytesIO(GOLDEN[key].tobytes())).convert("RGB"))


def golden_record(config: str) -> dict:
    return json.loads(str(GOLDEN[f"{config}/cfg"]))


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    """The test photos, plus the portrait image the golden script makes from chelsea.png."""
    loaded = {name: load_image(IMAGES / name) for name in PHOTOS}
    loaded["chelsea_portrait"] = loaded["chelsea.png"].transpose(Image.Transpose.ROTATE_90)
    return loaded


def max_diff_01(output: torch.Tensor, expected_u8: np.ndarray, mean, std) -> float:
    """Largest per-pixel difference in [0, 1] space between a normalised output and golden bytes."""
    mean_t, std_t = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
    expected = torch.from_numpy(expected_u8).permute(2, 0, 1).float() / 255
    assert output.shape == expected.shape
    return (output * std_t + mean_t - expected).abs().max().item()


def image_file(tmp_path: Path, img: Image.Image, name: str, **save_args) -> Path:
    path = tmp_path / name
    img.save(path, **save_args)
    return path


# ----------------------------------------------------------------------------------------------
# Golden parity with timm's eval transform
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", GOLDEN_CONFIGS)
def test_eval_transform_matches_timm(config, photos):
    record = golden_record(config)
    cfg = resolve_data_config({}, pretrained_cfg=record["pretrained_cfg"])
    assert json.loads(json.dumps(cfg)) == record["data_config"]
    transform = create_transform(**cfg)
    names = [key.split("/", 1)[1] for key in GOLDEN.files if key.startswith(f"{config}/") and key != f"{config}/cfg"]
    assert set(PHOTOS) <= set(names)
    for name in names:
        output = transform(photos[name])
        assert output.dtype == torch.float32
        assert tuple(output.shape) == tuple(cfg["input_size"])
        diff = max_diff_01(output, golden_pixels(f"{config}/{name}"), cfg["mean"], cfg["std"])
        assert diff <= TOLERANCE, f"{config} {name}: max difference {diff * 255:.2f}/255"


def test_golden_covers_the_fastvit_configs():
    expected = {
        "t8_in1k": ((3, 256, 256), 0.9, "bicubic", (0.485, 0.456, 0.406)),
        "mclip": ((3, 256, 256), 0.95, "bicubic", (0.0, 0.0, 0.0)),
        "crop_1": ((3, 256, 256), 1.0, "bicubic", (0.485, 0.456, 0.406)),
        "clip_224": ((3, 224, 224), 0.875, "bilinear", (0.48145466, 0.4578275, 0.40821073)),
    }
    for config, (size, crop_pct, interpolation, mean) in expected.items():
        data_config = golden_record(config)["data_config"]
        assert tuple(data_config["input_size"]) == size
        assert data_config["crop_pct"] == crop_pct
        assert data_config["interpolation"] == interpolation
        assert tuple(data_config["mean"]) == mean


def _pipeline(*steps) -> Compose:
    """``steps``, then to tensor and ImageNet normalisation (the stats of every config used below)."""
    return Compose([*steps, ToTensor(), Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])


class _ResizeWithReducingGap(Resize):
    """Pillow's faster two-step downscaling, which torchvision does not use."""

    def __call__(self, img):
        return img.resize(self.size[::-1], Image.Resampling.LANCZOS, reducing_gap=2.0)


class _ShiftedCrop:
    """A 256x256 crop one pixel right of the centre one."""

    def __call__(self, img):
        top, left = int(round((img.height - 256) / 2)), int(round((img.width - 256) / 2)) + 1
        return img.crop((left, top, left + 256, top + 256))


_CROP_256 = CenterCrop((256, 256))
# name: (golden config, photo, a transform with one deliberate mistake)
MISTAKES = {
    "resize-off-by-one": ("t8_in1k", "chelsea.png", _pipeline(Resize(285, "bicubic"), _CROP_256)),
    "long-side-rounded": ("t8_in1k", "chelsea.png", _pipeline(ResizeKeepRatio((284, 284), "bicubic"), _CROP_256)),
    "bilinear": ("t8_in1k", "chelsea.png", _pipeline(Resize(284, "bilinear"), _CROP_256)),
    "crop-offset": ("t8_in1k", "chelsea.png", _pipeline(Resize(284, "bicubic"), _ShiftedCrop())),
    "colour-lost": (
        "t8_in1k", "chelsea.png",
        _pipeline(Resize(284, "bicubic"), _CROP_256, lambda im: im.convert("L").convert("RGB")),
    ),
    "reducing-gap": (
        "squash_lanczos", "astronaut.png", _pipeline(_ResizeWithReducingGap((71, 71), "lanczos"), CenterCrop((64, 64)))
    ),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_golden_comparison_catches_mistakes(mistake, photos):
    """Each deliberate mistake must push the photo past the tolerance of the parity test."""
    config, name, wrong = MISTAKES[mistake]
    golden = golden_pixels(f"{config}/{name}")
    cfg = resolve_data_config({}, pretrained_cfg=golden_record(config)["pretrained_cfg"])
    right = create_transform(**cfg)
    assert max_diff_01(right(photos[name]), golden, cfg["mean"], cfg["std"]) <= TOLERANCE
    assert max_diff_01(wrong(photos[name]), golden, cfg["mean"], cfg["std"]) > TOLERANCE


OPS = {
    "resized_crop_bicubic": ((5, 9, 40, 50), (48, 56), "bicubic"),
    "resized_crop_bilinear": ((3, 2, 59, 37), (24, 40), "bilinear"),
}


@pytest.mark.parametrize("op", sorted(OPS))
def test_resized_crop_matches_torchvision(op):
    box, size, interpolation = OPS[op]
    crop = RandomResizedCrop(size, interpolation=interpolation)
    crop.sample_box = lambda width, height: box
    patch = Image.fromarray(golden_pixels("ops/input"))
    assert np.array_equal(np.asarray(crop(patch)), golden_pixels(f"ops/{op}"))


@pytest.mark.parametrize(
    ("op", "adjust"),
    [
        ("hflip", lambda im: RandomHorizontalFlip(p=1.0)(im)),
        ("brightness_1.3", lambda im: _adjust_brightness(im, 1.3)),
        ("contrast_0.7", lambda im: _adjust_contrast(im, 0.7)),
        ("saturation_1.4", lambda im: _adjust_saturation(im, 1.4)),
        ("hue_0.12", lambda im: _adjust_hue(im, 0.12)),
        ("hue_-0.3", lambda im: _adjust_hue(im, -0.3)),
    ],
)
def test_augmentation_ops_match_torchvision(op, adjust):
    patch = Image.fromarray(golden_pixels("ops/input"))
    assert np.array_equal(np.asarray(adjust(patch)), golden_pixels(f"ops/{op}"))


# ----------------------------------------------------------------------------------------------
# Eval transform details
# ----------------------------------------------------------------------------------------------


def test_eval_transform_repr_lists_the_steps():
    text = repr(create_transform(input_size=(3, 256, 256), crop_pct=0.9, interpolation="bicubic"))
    assert "Resize(size=284, interpolation='bicubic')" in text
    assert "CenterCrop(size=(256, 256)" in text
    assert "Normalize(mean=(0.485, 0.456, 0.406)" in text


def test_eval_transform_converts_other_modes(tmp_path):
    transform = create_transform(input_size=32, crop_pct=1.0)
    grey = transform(Image.new("L", (40, 50), 128))
    clear = transform(Image.new("RGBA", (40, 50), (0, 0, 0, 0)))
    assert grey.shape == clear.shape == (3, 32, 32)
    assert torch.allclose(clear, transform(Image.new("RGB", (40, 50), "white")))


def test_transform_pickles():
    for is_training in (False, True):
        transform = create_transform(input_size=16, is_training=is_training)
        assert repr(pickle.loads(pickle.dumps(transform))) == repr(transform)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"interpolation": "random"}, ValueError),
        ({"interpolation": "cubic"}, ValueError),
        ({"crop_mode": "corner"}, ValueError),
        ({"crop_pct": -1.0}, ValueError),
        ({"mean": (0.5,)}, ValueError),
        ({"input_size": (1, 224, 224)}, ValueError),
        ({"re_prob": 0.25}, ValueError),
        ({"no_such_option": 1}, TypeError),
    ],
)
def test_create_transform_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error):
        create_transform(**kwargs)


def test_create_transform_accepts_neutral_timm_options():
    create_transform(224, use_prefetcher=False, re_prob=0.0, vflip=0.0, auto_augment=None, normalize=True)


# ----------------------------------------------------------------------------------------------
# Training transform
# ----------------------------------------------------------------------------------------------


def _train(**kwargs) -> Compose:
    return create_transform(**{"input_size": (3, 64, 48), "is_training": True, "interpolation": "bicubic", **kwargs})


def test_train_transform_output(photos):
    output = _train()(photos["coffee.png"])
    assert output.shape == (3, 64, 48)
    assert output.dtype == torch.float32
    assert torch.isfinite(output).all()


def test_train_transform_is_deterministic_under_a_seed(photos):
    img = photos["astronaut.png"]
    first = _train(generator=torch.Generator().manual_seed(7))
    second = _train(generator=torch.Generator().manual_seed(7))
    assert all(torch.equal(first(img), second(img)) for _ in range(5))

    torch.manual_seed(3)
    global_a = _train()(img)
    torch.manual_seed(3)
    assert torch.equal(_train()(img), global_a)


def test_train_transform_varies(photos):
    transform = _train(generator=torch.Generator().manual_seed(0), interpolation="random")
    outputs = [transform(photos["rocket.jpg"]) for _ in range(6)]
    assert all(not torch.equal(outputs[0], other) for other in outputs[1:])


def test_random_flip_happens_about_half_the_time(photos):
    img = photos["chelsea.png"]
    aspect = img.width / img.height
    transform = create_transform(
        input_size=(3, 30, 45), is_training=True, scale=(1.0, 1.0), ratio=(aspect, aspect),
        color_jitter=None, generator=torch.Generator().manual_seed(1),
    )
    plain = create_transform(input_size=(3, 30, 45), is_training=True, scale=(1.0, 1.0), ratio=(aspect, aspect),
                             color_jitter=None, hflip=0.0)(img)
    flips = []
    for _ in range(40):
        output = transform(img)
        assert torch.equal(output, plain) or torch.equal(output, plain.flip(-1))
        flips.append(torch.equal(output, plain.flip(-1)))
    assert 8 <= sum(flips) <= 32


def test_random_resized_crop_boxes_respect_scale_and_ratio():
    crop = RandomResizedCrop((8, 8), scale=(0.25, 0.5), ratio=(0.8, 1.25), generator=torch.Generator().manual_seed(0))
    boxes = {crop.sample_box(400, 300) for _ in range(200)}
    assert len(boxes) > 150
    for top, left, height, width in boxes:
        assert 0 <= top <= 300 - height and 0 <= left <= 400 - width
        assert 0.24 <= height * width / (400 * 300) <= 0.51
        assert 0.79 <= width / height <= 1.26


def test_random_resized_crop_falls_back_to_a_central_crop():
    crop = RandomResizedCrop((8, 8), scale=(0.9, 1.0), ratio=(1.0, 1.0))
    assert crop.sample_box(1000, 10) == (0, 495, 10, 10)
    assert crop.sample_box(10, 1000) == (495, 0, 10, 10)


def test_color_jitter_changes_colours(photos):
    base = dict(input_size=(3, 32, 32), is_training=True, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0)
    img = photos["coffee.png"].crop((0, 0, 300, 300))
    still = create_transform(**base, color_jitter=0.0)(img)
    jittered = create_transform(**base, color_jitter=(0.4, 0.4, 0.4, 0.1), generator=torch.Generator().manual_seed(0))
    assert not torch.equal(jittered(img), still)
    assert "ColorJitter" not in repr(create_transform(**base, color_jitter=0.0))


# ----------------------------------------------------------------------------------------------
# load_image: modes, orientation, failures
# ----------------------------------------------------------------------------------------------


def _palette_with_transparency() -> Image.Image:
    img = Image.new("P", (8, 8), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.paste(1, (0, 0, 4, 8))
    img.info["transparency"] = 0
    return img


def _as_array(mode: str, values, dtype) -> Image.Image:
    img = Image.fromarray(np.asarray(values, dtype=dtype))
    return img if img.mode == mode else img.convert(mode)


# mode, image, file name, pixel (x, y), expected RGB
MODE_CASES = [
    ("1", Image.new("1", (8, 8), 1), "bilevel.png", (0, 0), (255, 255, 255)),
    ("L", Image.new("L", (8, 8), 128), "grey.png", (0, 0), (128, 128, 128)),
    ("LA", Image.new("LA", (8, 8), (100, 0)), "grey_clear.png", (0, 0), (255, 255, 255)),
    ("LA", Image.new("LA", (8, 8), (100, 255)), "grey_opaque.png", (0, 0), (100, 100, 100)),
    ("P", Image.new("RGB", (8, 8), (200, 30, 60)).quantize(4), "palette.png", (0, 0), (200, 30, 60)),
    ("P", _palette_with_transparency(), "palette_clear.png", (6, 0), (255, 255, 255)),
    ("P", _palette_with_transparency(), "palette_opaque.png", (1, 0), (0, 0, 255)),
    ("RGBA", Image.new("RGBA", (8, 8), (10, 20, 30, 0)), "rgba_clear.png", (0, 0), (255, 255, 255)),
    ("RGBA", Image.new("RGBA", (8, 8), (10, 20, 30, 255)), "rgba_opaque.png", (0, 0), (10, 20, 30)),
    ("RGBA", Image.new("RGBA", (8, 8), (0, 0, 0, 128)), "rgba_half.png", (0, 0), (127, 127, 127)),
    ("CMYK", Image.new("CMYK", (8, 8), (0, 0, 0, 0)), "cmyk_white.tif", (0, 0), (255, 255, 255)),
    ("CMYK", Image.new("CMYK", (8, 8), (255, 0, 0, 0)), "cmyk_cyan.tif", (0, 0), (0, 255, 255)),
    ("I;16", _as_array("I;16", np.full((8, 8), 32768), np.uint16), "grey16.png", (0, 0), (128, 128, 128)),
    ("I;16", _as_array("I;16", np.full((8, 8), 65535), np.uint16), "white16.png", (0, 0), (255, 255, 255)),
    ("I", _as_array("I", np.full((8, 8), 32768), np.int32), "grey32.tif", (0, 0), (128, 128, 128)),
    ("F", _as_array("F", np.full((8, 8), 0.5), np.float32), "greyf.tif", (0, 0), (128, 128, 128)),
]


@pytest.mark.parametrize(
    ("mode", "img", "name", "xy", "rgb"), MODE_CASES, ids=[case[2] for case in MODE_CASES]
)
def test_load_image_converts_every_mode_to_rgb(tmp_path, mode, img, name, xy, rgb):
    assert img.mode == mode
    path = image_file(tmp_path, img, name)
    with Image.open(path) as stored:
        assert stored.mode == mode  # the file really holds that mode
    loaded = load_image(path)
    assert loaded.mode == "RGB"
    assert loaded.size == img.size
    assert loaded.getpixel(xy) == rgb


def test_load_image_scales_16_bit_without_clipping(tmp_path):
    ramp = np.linspace(0, 65535, 256).round().astype(np.uint16).reshape(16, 16)
    loaded = load_image(image_file(tmp_path, Image.fromarray(ramp), "ramp16.png"))
    red = np.asarray(loaded)[..., 0].astype(int)
    assert red.min() == 0 and red.max() == 255
    assert np.abs(red - np.rint(ramp / 257)).max() == 0
    assert len(np.unique(red)) == 256


def test_transform_leaves_rgb_images_with_a_transparent_colour_alone():
    """``convert("RGB")`` of a grey or palette image with a transparent colour (as timm's datasets
    load them) keeps that colour in ``info``; timm's transform ignores it, and so must ours."""
    transform = create_transform(**resolve_data_config(model="fastvit_t8"))
    grey = Image.open(IMAGES / "chelsea.png").convert("L")
    grey.info["transparency"] = int(np.asarray(grey)[100, 100])
    rgb = grey.convert("RGB")
    assert "transparency" in rgb.info
    assert torch.equal(transform(rgb), transform(Image.fromarray(np.asarray(rgb))))


def test_load_image_keeps_grey_transparency_key(tmp_path):
    img = Image.new("L", (8, 8), 0)
    img.paste(90, (0, 0, 4, 8))
    loaded = load_image(image_file(tmp_path, img, "keyed.png", transparency=0))
    assert loaded.getpixel((0, 0)) == (90, 90, 90)
    assert loaded.getpixel((7, 0)) == (255, 255, 255)


@pytest.mark.parametrize(("orientation", "red_half"), [(6, "top"), (8, "bottom")])
def test_load_image_applies_exif_orientation(tmp_path, orientation, red_half):
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = orientation
    loaded = load_image(image_file(tmp_path, img, "phone.jpg", exif=exif, quality=95))
    assert loaded.size == (20, 40)
    top, bottom = loaded.getpixel((10, 5)), loaded.getpixel((10, 35))
    red, blue = (top, bottom) if red_half == "top" else (bottom, top)
    assert red[0] > 200 and red[2] < 60
    assert blue[2] > 200 and blue[0] < 60


def test_load_image_reads_the_photos():
    for name in PHOTOS:
        img = load_image(str(IMAGES / name))
        assert img.mode == "RGB"
        with Image.open(IMAGES / name) as plain:
            assert np.array_equal(np.asarray(img), np.asarray(plain.convert("RGB")))


def _truncated_jpeg(path: Path) -> None:
    data = (IMAGES / "rocket.jpg").read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda path: None, "no such file"),
        (lambda path: path.write_bytes(b""), "empty"),
        (lambda path: path.write_text("just some text\n"), "not an image"),
        (_truncated_jpeg, "truncated"),
        (lambda path: path.mkdir(), "directory"),
    ],
    ids=["missing", "empty", "text", "truncated", "directory"],
)
def test_load_image_refuses_unreadable_files(tmp_path, make, reason):
    path = tmp_path / "bad.jpg"
    make(path)
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    message = str(info.value)
    assert "bad.jpg" in message and reason in message
    assert "\n" not in message


def test_load_image_from_bytes_and_file_objects():
    """An upload arrives as bytes or a file object: it decodes to the same pixels as the file, and
    bad data gets the same one-line reasons."""
    path = IMAGES / "rocket.jpg"
    data = path.read_bytes()
    expected = np.asarray(load_image(path))
    assert np.array_equal(np.asarray(load_image(data)), expected)
    with path.open("rb") as file:
        assert np.array_equal(np.asarray(load_image(file)), expected)
    for bad, reason in ((b"", "the file is empty"), (b"not an image", "not an image format Pillow can read"),
                        (data[:3000], "cannot decode it")):
        with pytest.raises(ImageLoadError, match=f"cannot load image '<bytes>': {reason}"):
            load_image(bad)


def test_load_image_reports_permission_denied(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Image, "open", denied)
    with pytest.raises(ImageLoadError, match="permission denied"):
        load_image(tmp_path / "secret.png")


@pytest.mark.parametrize("side", [40, 50], ids=["over-limit", "over-twice-limit"])
def test_load_image_refuses_decompression_bombs(tmp_path, monkeypatch, side):
    path = image_file(tmp_path, Image.new("RGB", (side, side)), "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(path)


def test_load_image_accepts_an_image_at_the_pixel_limit(tmp_path, monkeypatch):
    path = image_file(tmp_path, Image.new("RGB", (40, 25)), "fits.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert load_image(path).size == (40, 25)


# ----------------------------------------------------------------------------------------------
# resolve_data_config
# ----------------------------------------------------------------------------------------------


def test_resolve_data_config_defaults():
    assert resolve_data_config() == {
        "input_size": (3, 224, 224),
        "interpolation": "bicubic",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "crop_pct": 0.875,
        "crop_mode": "center",
    }


T8_CFG = {"input_size": (3, 256, 256), "crop_pct": 0.9, "interpolation": "bicubic", "num_classes": 1000}


def test_resolve_data_config_from_cfg_and_model():
    model = types.SimpleNamespace(pretrained_cfg=T8_CFG)
    for config in (resolve_data_config(pretrained_cfg=T8_CFG), resolve_data_config(model=model),
                   resolve_model_data_config(model)):
        assert config["input_size"] == (3, 256, 256)
        assert config["crop_pct"] == 0.9
        assert config["mean"] == (0.485, 0.456, 0.406)


def test_resolve_data_config_precedence():
    model = types.SimpleNamespace(pretrained_cfg={"crop_pct": 0.95, "input_size": (3, 192, 192)})
    assert resolve_data_config(pretrained_cfg=T8_CFG, model=model)["crop_pct"] == 0.9  # explicit cfg wins
    args = {"crop_pct": 1.0, "interpolation": "bilinear", "mean": None, "std": (0.5,), "input_size": None}
    config = resolve_data_config(args, model=model)
    assert config["crop_pct"] == 1.0
    assert config["interpolation"] == "bilinear"
    assert config["mean"] == (0.485, 0.456, 0.406)  # None in args does not override
    assert config["std"] == (0.5, 0.5, 0.5)  # one value is repeated per channel
    assert config["input_size"] == (3, 192, 192)
    assert resolve_data_config({"img_size": 320}, model=model)["input_size"] == (3, 320, 320)
    assert resolve_data_config({"input_size": (3, 128, 160)}, model=model)["input_size"] == (3, 128, 160)
    grey = resolve_data_config({"input_size": (1, 64, 64), "mean": (0.5,), "std": (0.25,)}, model=model)
    assert (grey["mean"], grey["std"]) == ((0.5,), (0.25,))  # as in timm, the input size gives the channels
    with pytest.raises(ValueError, match="expected 1 or 1 normalisation values"):
        resolve_data_config({"input_size": (1, 64, 64), "mean": (0.5, 0.5, 0.5)}, model=model)


def test_resolve_data_config_test_size():
    cfg = {**T8_CFG, "test_input_size": (3, 320, 320), "test_crop_pct": 1.0}
    assert resolve_data_config(pretrained_cfg=cfg)["input_size"] == (3, 256, 256)
    config = resolve_data_config(pretrained_cfg=cfg, use_test_size=True)
    assert config["input_size"] == (3, 320, 320) and config["crop_pct"] == 1.0


def test_resolve_data_config_from_model_name(monkeypatch):
    registry = types.ModuleType("fastvit.models.registry")
    registry.get_pretrained_cfg = lambda name: {"fastvit_x.tag": {**T8_CFG, "crop_pct": 0.95}}[name]
    monkeypatch.setitem(sys.modules, "fastvit.models.registry", registry)
    assert resolve_data_config(model="fastvit_x.tag")["crop_pct"] == 0.95


def test_resolve_data_config_from_registered_name():
    registry = pytest.importorskip("fastvit.models.registry")
    config = resolve_data_config(model="fastvit_t8.apple_in1k")
    assert config == resolve_data_config(pretrained_cfg=registry.get_pretrained_cfg("fastvit_t8.apple_in1k"))
    assert config["input_size"] == (3, 256, 256) and config["crop_pct"] == 0.9


# ----------------------------------------------------------------------------------------------
# Labels and import weight
# ----------------------------------------------------------------------------------------------


def test_imagenet_labels():
    classes, synsets = imagenet_classes(), imagenet_synsets()
    assert len(classes) == len(synsets) == 1000
    assert classes[281] == "tabby, tabby cat"
    assert synsets[281] == "n02123045"
    assert classes[0].startswith("tench")
    classes.clear()  # callers get their own list
    assert len(imagenet_classes()) == 1000


def test_import_is_light():
    code = "import sys, fastvit.data; print(sorted({'timm', 'torchvision'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_split_per_batch_gives_the_whole_transforms_values():
    transform = create_transform(**resolve_data_config(pretrained_cfg={"input_size": (3, 256, 256), "crop_pct": 0.9}))
    per_image, per_batch = split_per_batch(transform)
    images = [load_image(path) for path in sorted(IMAGES.iterdir())]
    batch = per_batch(torch.stack([per_image(image) for image in images]))
    assert batch.dtype == torch.float32
    assert torch.equal(batch, torch.stack([transform(image) for image in images]))
    whole, identity = split_per_batch(Compose(transform.transforms[:-1]))
    assert whole.transforms == transform.transforms[:-1] and identity(batch) is batch


# ----------------------------------------------------------------------------------------------
# Decoders: exact (the transform, bit for bit) and fast (reduced JPEG decoding, faster resize)
# ----------------------------------------------------------------------------------------------

SMALL_MODEL = {"input_size": (3, 64, 64), "crop_pct": 0.9, "interpolation": "bicubic"}  # resize to 71, crop 64


def jpeg_bytes(img: Image.Image, size: tuple[int, int] | None = None, **save_args) -> bytes:
    """``img`` (resized to ``size``) as JPEG quality 90."""
    data = io.BytesIO()
    (img.resize(size, Image.Resampling.BICUBIC) if size else img).save(data, "JPEG", quality=90, **save_args)
    return data.getvalue()


def pixel_differences(config: dict, source, **options) -> tuple[float, int]:
    """Mean and largest difference (grey levels) between the fast and the exact decoder's pixels."""
    exact, fast = (create_decoder(config, mode, **options)(source).int() for mode in ("exact", "fast"))
    assert exact.shape == fast.shape
    difference = (exact - fast).abs()
    return difference.float().mean().item(), difference.max().item()


def test_exact_decoder_is_the_transform_bit_for_bit():
    config = resolve_data_config(model="fastvit_t8")
    transform, decoder = create_transform(**config), create_decoder(config)
    paths = [IMAGES / name for name in PHOTOS]
    batch = stack_images([decoder(path) for path in paths])
    assert batch.dtype == torch.uint8 and batch.is_contiguous(memory_format=torch.channels_last)
    floats = decoder.to_float(batch)
    assert floats.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(floats, torch.stack([transform(load_image(path)) for path in paths]))


@pytest.mark.parametrize(
    ("stored", "orientation", "expected_reduction"),
    [((1280, 960), 1, 4), ((960, 1280), 1, 4), ((1280, 960), 6, 4), ((400, 300), 1, 2), ((3000, 80), 1, 1),
     ((150, 120), 1, 1)],
    ids=["landscape", "portrait", "exif-rotated", "small", "strip", "smaller-than-twice"],
)
def test_fast_decoding_keeps_at_least_twice_the_resize_target(stored, orientation, expected_reduction):
    """The DCT scale is the smallest that leaves 2 decoded pixels per output pixel both ways:
    never fewer, and the next scale down would leave fewer (unless 1/8, the last)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = jpeg_bytes(load_image(IMAGES / "chelsea.png"), stored, exif=exif)
    resize = create_transform(**SMALL_MODEL).transforms[1]
    with ImageReader(data) as reader:
        plan = resize.plan(*reader.size)
        decoded = reader.decode(min_size=reduced_size_needed(plan, reader.size))
    assert reader.size == (stored[::-1] if orientation == 6 else stored)
    assert reader.reduction == expected_reduction
    assert decoded.size == tuple(-(-side // expected_reduction) for side in reader.size)  # upright
    if expected_reduction > 1:
        assert all(have >= 2 * want for have, want in zip(decoded.size, plan.size))
    if expected_reduction < 8:
        assert any(-(-side // (2 * expected_reduction)) < 2 * want for side, want in zip(reader.size, plan.size))


def test_fast_training_crops_keep_twice_the_target():
    """A random crop, however small, keeps 2 decoded pixels per output pixel at the scale Pillow's
    draft picks from the size asked for (the largest of 8, 4, 2, 1 that fits both ways)."""
    crop = RandomResizedCrop((64, 64), generator=torch.Generator().manual_seed(0))
    for width, height in ((4000, 3000), (3000, 4000), (1500, 1000), (640, 480)):
        for _ in range(200):
            plan = crop.plan(width, height)
            need_w, need_h = reduced_size_needed(plan, (width, height))
            scale = next(s for s in (8, 4, 2, 1) if s <= min(width // need_w, height // need_h) or s == 1)
            left, top, right, bottom = plan.box
            assert scale == 1 or min((right - left) / scale / 64, (bottom - top) / scale / 64) >= 2


def test_fast_decoding_leaves_other_formats_whole(tmp_path):
    path = image_file(tmp_path, load_image(IMAGES / "astronaut.png"), "big.png")
    with ImageReader(path) as reader:
        assert reader.decode(min_size=(16, 16)).size == (512, 512) and reader.reduction == 1


@pytest.mark.parametrize("name", PHOTOS)
def test_fast_decoder_stays_close_to_exact_on_real_photos(name):
    """Bounds about twice the differences measured (the README's quality table has the rest)."""
    photo = load_image(IMAGES / name)
    t8 = resolve_data_config(model="fastvit_t8")
    for source in ((IMAGES / name).read_bytes(), jpeg_bytes(photo, (1280, 960)), jpeg_bytes(photo, (960, 1280))):
        mean, largest = pixel_differences(t8, source)  # no draft at 256 px: torch's resize against Pillow's
        assert mean < 0.02 and largest <= 2
    mean, largest = pixel_differences(SMALL_MODEL, IMAGES / name)  # Pillow's reduce(), then torch's resize
    assert mean < 1.0 and largest <= 12
    for size in ((1280, 960), (960, 1280)):  # JPEG decoded at 1/4, then torch's resize
        mean, largest = pixel_differences(SMALL_MODEL, jpeg_bytes(photo, size))
        assert mean < 0.6 and largest <= 6


@pytest.mark.parametrize("config", GOLDEN_CONFIGS)
def test_fast_decoder_follows_every_golden_config(config, photos):
    """Each crop mode, size and interpolation of the golden configs, decoded fast: the same shape,
    within a few grey levels of exact (bounds about twice the largest measured)."""
    data_config = resolve_data_config({}, pretrained_cfg=golden_record(config)["pretrained_cfg"])
    for name in ("chelsea.png", "astronaut.png"):
        mean, largest = pixel_differences(data_config, IMAGES / name)
        assert mean < 1.2 and largest <= 16, (name, mean, largest)


def test_center_crop_of_a_tensor_is_the_crop_of_the_image():
    rng = np.random.default_rng(0)
    for height, width in ((40, 50), (30, 20), (33, 70), (10, 10)):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        for size in ((32, 32), (40, 60), (31, 45)):
            crop = CenterCrop(size, fill=(12, 34, 56))
            from_tensor = crop(torch.from_numpy(pixels).permute(2, 0, 1)).permute(1, 2, 0).numpy()
            assert np.array_equal(from_tensor, np.asarray(crop(Image.fromarray(pixels))))


def test_fast_training_decoder_draws_the_same_crops(tmp_path):
    """Same generator, same crops: fast differs from exact only by the reduced decoding (and at
    the crop's edges, where the fast resize reads the real neighbours instead of clamping)."""
    data = jpeg_bytes(load_image(IMAGES / "coffee.png"), (1280, 960))
    outputs = {}
    for mode in ("exact", "fast"):
        decoder = create_decoder(SMALL_MODEL, mode, is_training=True, generator=torch.Generator().manual_seed(0))
        outputs[mode] = torch.stack([decoder(data) for _ in range(8)]).int()
    difference = (outputs["exact"] - outputs["fast"]).abs()
    assert difference.float().mean() < 0.8 and difference.max() <= 40
    whole = {"is_training": True, "scale": (1.0, 1.0), "ratio": (4 / 3, 4 / 3), "color_jitter": None}  # the whole photo
    mean, largest = pixel_differences(SMALL_MODEL, data, hflip=1.0, **whole)  # then an augmentation, on PIL images
    assert mean < 0.6 and largest <= 6


def test_decoders_refuse_bad_files_and_modes_alike(tmp_path):
    config = resolve_data_config(model="fastvit_t8")
    decoders = [create_decoder(config, mode) for mode in ("exact", "fast")]
    data = (IMAGES / "rocket.jpg").read_bytes()
    for bad in (b"", b"not an image", data[: len(data) // 2]):
        reasons = []
        for decoder in decoders:
            with pytest.raises(ImageLoadError) as info:
                decoder(bad)
            reasons.append(str(info.value))
        assert reasons[0] == reasons[1]
    thin = io.BytesIO()
    Image.new("RGB", (1, 20_000)).save(thin, "PNG")  # 100 bytes; resized for the crop: 284 x 5.7 million
    for decoder in decoders:
        with pytest.raises(ImageLoadError, match=r"too elongated: 1x20000 pixels would be resized to 284x5680000"):
            decoder(thin.getvalue())
    line = io.BytesIO()
    Image.new("RGB", (1, 3000)).save(line, "PNG")
    for decoder in (create_decoder({**config, "crop_mode": "border"}, mode) for mode in ("exact", "fast")):
        with pytest.raises(ImageLoadError, match=r"too elongated: 1x3000 pixels would be resized to 0x284"):
            decoder(line.getvalue())  # fitted whole into 284 x 284 for the crop: no width left
    square = io.BytesIO()
    Image.new("RGB", (2, 2)).save(square, "PNG")
    for decoder in (create_decoder(config, mode, max_pixels=3) for mode in ("exact", "fast")):
        with pytest.raises(ImageLoadError, match=r"decompression bomb \(over the limit of 3 pixels\)"):
            decoder(square.getvalue())
    assert create_decoder(config, max_pixels=4)(square.getvalue()).shape == (3, 256, 256)  # the crop: no limit
    with pytest.raises(ValueError, match="unknown decode mode 'draft'"):
        create_decoder(config, "draft")
    with pytest.raises(ValueError, match="needs a transform that starts with"):
        ImageDecoder(Compose([CenterCrop((8, 8)), ToTensor()]), "fast")
