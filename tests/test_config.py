import dataclasses

import pytest
import yaml

from kit import KitError
from kit.config import Spec, _build, dump, load_spec
from tests.helpers import spec_file


@pytest.mark.parametrize("slug", ["demo", "dogs-vs-cats-redux-kernels-edition"])
def test_shipped_specs_load(slug):
    spec = load_spec(slug)
    assert spec.slug == slug
    assert [p.name for p in spec.schedule] == ["head", "finetune"]


def test_real_specs_default_to_imagenet_and_the_demo_does_not():
    assert load_spec("dogs-vs-cats-redux-kernels-edition").weights == "imagenet"
    assert load_spec("demo").weights is None


def test_default_schedule_finetunes_the_top_block_100x_lower(tmp_path):
    spec = load_spec(str(spec_file(tmp_path, schedule=dataclasses.asdict(Spec("x"))["schedule"])))
    head, finetune = spec.schedule
    assert (head.trainable, finetune.trainable) == ("none", "top:1")
    assert head.lr / finetune.lr == pytest.approx(100)


@pytest.mark.parametrize("keys, message", [
    ({"batch_sise": 8}, "unknown key 'batch_sise' (did you mean 'batch_size'?)"),
    ({"batch_size": "many"}, "batch_size: expected int, got 'many'"),
    ({"task": "regression"}, "task: 'regression' is not one of"),
    ({"metric": "f2"}, "metric: f2 does not apply to a multiclass task"),
    ({"backbones": ["vgg16", "xcepton"]}, "unknown backbone 'xcepton' (did you mean 'xception'?)"),
    ({"schedule": [{"name": "a", "epochs": 1, "trainable": "top:0"}]}, "trainable 'top:0' is not none, all, top:K or progressive"),
    ({"schedule": [{"name": "a", "epochs": 1}, {"name": "a", "epochs": 1}]}, "phase names must differ"),
    ({"schedule": [{"name": "a", "epochs": 0}, {"name": "b", "epochs": 0}]}, "every phase (a, b) has 0 epochs"),
    ({"schedule": [{"name": "a", "epochs": 1, "trainable": "progressive", "round_lr": 2}]}, "phase a: round_lr 2.0 is not in (0, 1]"),
    ({"schedule": [{"name": "a", "epochs": 1, "lr_mult": 0}]}, "phase a: lr_mult 0.0 is not in (0, 1]"),
    ({"schedule": [{"name": "a", "epochs": 1, "trainable": "progressive", "max_blocks": -1}]}, "max_blocks -1 is below 0"),
    ({"schedule": [{"name": "a", "epochs": 1, "trainable": "top:1", "max_blocks": 2}]},
     "round_lr and max_blocks are for trainable: progressive, not top:1"),
    ({"loss": "hinge"}, "loss: 'hinge' is not one of crossentropy, focal"),
    ({"label_smoothing": 1.0}, "label_smoothing: 1.0 is not in [0, 1)"),
    ({"ema": 0.99, "accumulate": 4}, "ema with accumulate"),
    ({"jit_compile": "on", "cutmix": 1.0}, "jit_compile on with mixup/cutmix: XLA has no kernel for their beta draws"),
    ({"task": "multilabel", "metric": "f2", "class_weight": "balanced"}, "for a multilabel task use loss: focal"),
    ({"schedule": [{"name": "a", "epocs": 3}]}, "unknown key 'epocs' (did you mean 'epochs'?)"),
    ({"schedule": [{"name": "a", "epochs": 1}, {"name": "b", "lr": 0.01}]}, "schedule: phase b: missing key 'epochs'"),
    ({"n_folds": 1}, "n_folds: 1 is below 2"),
    ({"weights": "missing.h5"}, "no weights file at missing.h5"),
    ({"augment": [{"HorizontalFlip": {"prob": 0.5}}]}, "HorizontalFlip: Argument(s) 'prob' are not valid"),
    ({"label_regex": "cat"}, "needs a (group)"),
    ({"backbones": ["vgg16", "vgg16"]}, "backbones: vgg16 is listed twice"),
    ({"image_sizes": [4]}, "image_sizes: 4 is too small"),
    ({"backbones": ["efficientnet_b0"]}, "unknown backbone 'efficientnet_b0' (did you mean 'efficientnetb0'"),
])
def test_bad_spec_fails_on_load_naming_the_key(tmp_path, keys, message):
    with pytest.raises(KitError, match=None) as e:
        load_spec(str(spec_file(tmp_path, **keys)))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("member, keys, message", [
    ("swin_tiny", {"schedule": [{"name": "a", "epochs": 1, "trainable": "top:6"}]},
     "phase a: top:6 is beyond swin_tiny's 5 blocks (top:1 opens stage_3, top:5 patch_embedding and up, or all)"),
    ("vgg16", {"schedule": [{"name": "a", "epochs": 1, "trainable": "top:6"}]}, "top:6 is beyond vgg16's 5 blocks"),
    ("vit_b16", {"weights": "imagenet", "image_size": 384},
     "vit_b16: its pretrained weights take 224px images only, not 384px"),
])
def test_what_one_backbone_cannot_take_fails_for_that_member_only(tmp_path, member, keys, message):
    """The spec is checked for the member being trained (make fold=0 backbone=...), not for the
    spec's other backbones; make all checks every member before the first trains."""
    from kit.members import check_members, member_spec

    spec = load_spec(str(spec_file(tmp_path, backbones=["efficientnetb0"], **keys)))  # 9 blocks: fine
    with pytest.raises(KitError) as e:
        member_spec(spec, member)
    assert message in str(e.value) and "\n" not in str(e.value)
    backbone = member.split("-")[0]
    with pytest.raises(KitError, match=backbone):
        check_members(load_spec(str(spec_file(tmp_path, backbones=["efficientnetb0", backbone], **keys))))


def test_progressive_needs_a_backbone_with_blocks_to_open_one_by_one(tmp_path, monkeypatch):
    import dataclasses

    from kit.backbones import BACKBONES
    from kit.members import member_spec

    monkeypatch.setitem(BACKBONES, "oneblock", dataclasses.replace(BACKBONES["vgg16"], blocks=("block5_",)))
    spec = load_spec(str(spec_file(tmp_path, schedule=[{"name": "up", "epochs": 1, "trainable": "progressive"}])))
    with pytest.raises(KitError, match="phase up: progressive needs blocks to open one by one; oneblock lists 1"):
        member_spec(spec, "oneblock")
    assert member_spec(spec, "vgg16")[0] == "vgg16"


def test_image_size_is_rounded_up_to_the_backbones_patches_never_below_its_minimum(tmp_path):
    from kit.backbones import BACKBONES
    from kit.members import image_size

    spec = load_spec(str(spec_file(tmp_path, image_size=100)))
    assert [image_size(spec, BACKBONES[n]) for n in ("vgg16", "dinov2_small", "vit_b16", "swin_tiny")] == [
        100, 112, 112, 224]
    assert image_size(load_spec(str(spec_file(tmp_path, image_size=None))), BACKBONES["efficientnetb3"]) == 300


def test_unknown_competition_lists_the_known_ones():
    with pytest.raises(KitError, match="unknown competition 'dgos'.*demo"):
        load_spec("dgos")


def test_command_line_overrides_are_typed(tmp_path):
    spec = load_spec(str(spec_file(tmp_path)), {
        "epochs_head": "3", "lr_finetune": "1e-5", "trainable_finetune": "top:2", "weights": "null",
        "backbones": "vgg16,xception", "image_size": "64", "dropout": "0.5", "label_sep": "yes",
        "classes": "b,a", "target_column": "x,y"})
    head, finetune = spec.schedule
    assert (head.epochs, finetune.lr, finetune.trainable) == (3, 1e-5, "top:2")
    assert spec.weights is None and spec.image_size == 64 and spec.dropout == 0.5
    assert spec.backbones == ["vgg16", "xception"] and spec.classes == ["b", "a"]
    assert spec.label_sep == "yes"  # a string key keeps the text, not YAML's boolean
    assert spec.target_column == ["x", "y"]
    numbers = load_spec(str(spec_file(tmp_path)), {"seeds": "0,1", "image_sizes": "32,40"})
    assert (numbers.seeds, numbers.image_sizes) == ([0, 1], [32, 40])
    assert load_spec(str(spec_file(tmp_path)), {"seeds": "3"}).seeds == [3]
    assert load_spec(str(spec_file(tmp_path)), {"workers": "auto"}).workers == 0  # one per core
    assert load_spec(str(spec_file(tmp_path, seeds=[1])), {"seeds": ""}).seeds == []  # seeds= : none
    assert load_spec(str(spec_file(tmp_path, workers="auto"))).workers == 0
    # phase fields with an underscore in their name, and a phase name with one
    spec = load_spec(str(spec_file(tmp_path, schedule=[{"name": "head", "epochs": 1}, {"name": "fine_tune", "epochs": 1}])), {
        "trainable_fine_tune": "progressive", "round_lr_fine_tune": "0.5", "max_blocks_fine_tune": "2",
        "lr_mult_fine_tune": "0.25"})
    assert (spec.schedule[1].round_lr, spec.schedule[1].max_blocks, spec.schedule[1].lr_mult) == (0.5, 2, 0.25)


@pytest.mark.parametrize("key, value, message", [
    ("epochs_hed", "3", "unknown key 'epochs_hed' (did you mean 'epochs_head'?)"),
    ("batch_size", "8.5", "batch_size: expected int"),
    ("epochs_head", "x", "epochs_head: expected int"),
    ("workers", "many", "workers: expected int, got 'many'"),
    ("classes", "[a", "classes=[a: not valid YAML (expected ',' or ']', but got '<stream end>')"),
    ("augment", "{a", "augment={a: not valid YAML"),
    ("backbones", "", "backbones: none listed (make backbones lists the ones to choose from)"),
    ("schedule", "[{name: up, trainable: all}]", "schedule: phase up: missing key 'epochs'"),
])
def test_bad_override_is_one_clear_line(tmp_path, key, value, message):
    with pytest.raises(KitError) as e:
        load_spec(str(spec_file(tmp_path)), {key: value})
    assert message in str(e.value)


def test_dumped_spec_loads_back_to_the_same_spec(tmp_path):
    spec = load_spec(str(spec_file(tmp_path)), {"epochs_head": "4"})
    raw = yaml.safe_load(dump(spec, backbone="vgg16", fold=1))
    assert (raw.pop("backbone"), raw.pop("fold")) == ("vgg16", 1)
    assert _build(Spec, raw, "dump") == spec


def test_a_yaml_mistake_names_the_line_and_column(tmp_path):
    spec = tmp_path / "tabs.yaml"
    spec.write_text("task: multiclass\nschedule:\n\t- {name: head}\n")
    with pytest.raises(KitError) as e:
        load_spec(str(spec))
    assert str(e.value) == (f"{spec}, line 3, column 1: not valid YAML (found character '\\t' that cannot start "
                            f"any token; a tab: YAML indents with spaces)")
