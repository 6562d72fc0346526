import json

import pytest
import torch
from torch import nn

from nas.errors import SpecError
from nas.models.network import build
from nas.models.registry import Registry
from nas.models.spec import load_spec, normalize_spec, save_spec

TINY = {"width": 8, "blocks": [{"type": "residual"}], "scale": 2}


def test_defaults_filled_and_input_not_mutated():
    spec = {"width": 8, "blocks": [{"type": "residual"}]}
    out = normalize_spec(spec)
    assert out["scale"] == 4 and out["global_skip"] == "none" and out["fusion"] is None
    assert "scale" not in spec


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ({"width": 8}, "'blocks'"),
        ({"blocks": [{"type": "residual"}]}, "'width'"),
        ({**TINY, "widht": 3}, "unknown spec key(s) 'widht'"),
        ({**TINY, "width": 0}, "'width' must be a positive integer"),
        ({**TINY, "width": True}, "'width' must be a positive integer"),
        ({**TINY, "input_range": 100}, "'input_range' must be 1 or 255"),
        ({**TINY, "blocks": []}, "non-empty list"),
        ({**TINY, "blocks": ["rfdb"]}, "blocks[0] must be a mapping"),
        ({**TINY, "global_skip": "lanczos"}, "'global_skip' must be one of"),
        ({**TINY, "body_skip": "yes"}, "'body_skip' must be true or false"),
        ({**TINY, "upsampler": "pixelshuffle"}, "'upsampler' must be a mapping"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_bad_specs_name_the_problem(bad, fragment):
    with pytest.raises(SpecError) as err:
        normalize_spec(bad)
    assert fragment in str(err.value)


def test_unknown_block_and_option_are_clear_errors():
    with pytest.raises(SpecError, match=r"blocks\[0\]: unknown block 'transformer'; known: .*residual"):
        build({**TINY, "blocks": [{"type": "transformer"}]})
    with pytest.raises(SpecError, match=r"blocks\[0\]: block 'residual': unknown option\(s\) 'colour'"):
        build({**TINY, "blocks": [{"type": "residual", "colour": 1}]})


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_spec_round_trip(tmp_path, suffix):
    path = tmp_path / f"spec{suffix}"
    save_spec(TINY, path)
    assert load_spec(path) == normalize_spec(TINY)
    a, b = build(TINY), build(load_spec(path))
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    assert a.spec == b.spec


def test_load_spec_errors(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("width: [1, 2\n")
    with pytest.raises(SpecError, match="cannot parse"):
        load_spec(bad)
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("width: !!python/object/apply:os.system ['echo hi']\nblocks: []\n")
    with pytest.raises(SpecError, match="cannot parse"):
        load_spec(unsafe)
    wrapped = tmp_path / "card.json"
    wrapped.write_text(json.dumps({"spec": TINY}))
    assert load_spec(wrapped)["width"] == 8


@pytest.mark.parametrize("skip", ["none", "bilinear", "bicubic", "repeat"])
@pytest.mark.parametrize("input_range", [1, 255])
def test_forward_shapes_for_every_global_skip(skip, input_range):
    model = build({**TINY, "global_skip": skip, "input_range": input_range, "body_conv": True, "body_skip": True})
    out = model(torch.rand(1, 3, 6, 7))
    assert out.shape == (1, 3, 12, 14)


def test_repeat_skip_is_nearest_upsampling():
    from nas.models.blocks.common import global_skip

    x = torch.rand(1, 3, 4, 5)
    expected = torch.nn.functional.interpolate(x, scale_factor=3, mode="nearest")
    assert torch.equal(global_skip(x, "repeat", 3), expected)


def test_registry_rejects_duplicates_and_builds_with_context():
    reg: Registry = Registry("thing")

    @reg.register("lin")
    class Lin(nn.Linear):
        def __init__(self, channels: int, out: int = 2) -> None:
            super().__init__(channels, out)

    with pytest.raises(ValueError, match="already registered"):
        reg.register("lin")(Lin)
    m = reg.build({"type": "lin", "out": 5}, channels=3)
    assert m.weight.shape == (5, 3)
    with pytest.raises(SpecError, match="missing"):
        reg.build({"type": "lin"})
    with pytest.raises(SpecError, match="'type' key"):
        reg.build({"out": 1})
