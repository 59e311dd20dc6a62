"""A member's spec: a backbone, or a variant of one (its seed, image size, pseudo-labels), and
what that backbone cannot take (a top:K beyond its blocks, a size its weights do not take)."""
import dataclasses

from kit import KitError
from kit.checks import check_backbone
from kit.runs import variant, variants


def member_spec(spec, name):
    """(backbone, the spec it trains with) of a member (kit/runs.Variant): its seed, image size
    and pseudo-labels; the folds stay the competition's."""
    v = variant(name)
    entry = check_backbone(v.backbone)
    if v.image_size is not None and v.image_size < entry.min_size:
        raise KitError(f"{name}: {v.image_size}px is below {v.backbone}'s minimum of {entry.min_size}px")
    if v.pseudo and not spec.pseudo:
        raise KitError(f"{name}: a -pseudo member trains on pseudo-labels: make pseudo writes them, and the "
                       f"spec that names them")
    folds_seed = spec.seed if spec.folds_seed is None else spec.folds_seed
    trained = dataclasses.replace(
        spec, seed=spec.seed if v.seed is None else v.seed, image_size=v.image_size or spec.image_size,
        pseudo=spec.pseudo if v.pseudo else "", folds_seed=folds_seed)
    check_member(trained, name, entry)
    return v.backbone, trained


def check_members(spec):
    """Every member of the spec trainable as the spec says: checked before any of them trains."""
    for v in variants(spec):
        member_spec(spec, v.name)


def check_member(spec, name, entry):
    """What fails on a backbone before any training: a top:K beyond its blocks, a size its
    pretrained weights do not take."""
    for p in spec.schedule:
        if p.trainable.startswith("top:") and int(p.trainable[4:]) > len(entry.blocks):
            first, last = (b.rstrip("_") for b in (entry.blocks[0], entry.blocks[-1]))
            raise KitError(f"schedule: phase {p.name}: {p.trainable} is beyond {name}'s {len(entry.blocks)} "
                           f"blocks (top:1 opens {last}, top:{len(entry.blocks)} {first} and up, or all)")
        if p.trainable == "progressive" and len(entry.blocks) < 2:
            raise KitError(f"schedule: phase {p.name}: progressive needs blocks to open one by one; {name} "
                           f"lists {len(entry.blocks)} (use top:1 or all)")
    size = image_size(spec, entry)
    if entry.fixed and spec.weights is not None and size != entry.size:
        raise KitError(f"{name}: its pretrained weights take {entry.size}px images only, not {size}px "
                       f"(image_size: {entry.size}, or weights: null to train from scratch)")


def image_size(spec, entry):
    """The spec's size (or the backbone's own), never below the backbone's minimum, rounded up to
    a multiple of its step (a transformer's patch)."""
    size = max(spec.image_size or entry.size, entry.min_size)
    return -(-size // entry.step) * entry.step
