"""A phase as it will train, resolved once before any training: which blocks of the base open and
at which rates, what feeds it (images end to end, the frozen base's pooled outputs, or the
outputs of the frozen prefix below the opened blocks) and where that prefix ends. A progressive
phase is one plan per round (top:1, top:2, ...). The trainer executes plans (kit/train.py).

Cached outputs see augmentation only through cached copies: the prefix cache is on by default
only when that is all the phase would see (no augmentation, or feature_copies).
"""
import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from kit.config import Phase
from kit.features import WITHOUT, room
from kit.prefix import cut
from kit.pretrained import block_factors, set_trainable
from kit.runs import cache_dir


@dataclass(frozen=True)
class Plan:
    phase: Phase  # as it trains: a progressive round's name (<phase>-top<k>), `top:k` and rate
    round: int  # progressive: the blocks the round opens; 0: not progressive
    source: str | None  # None: images, end to end | "head": the frozen base's pooled outputs | "prefix"
    cut: object  # the tensor the opened blocks read from the frozen prefix, when some is frozen
    factors: dict  # lr_mult: each opened variable's multiple of the phase's rate
    why: str | None  # prefix_cache on, and the phase trains end to end anyway: why


def schedule_plans(spec, base, blocks, augment):
    """[the plans of each phase of the spec's schedule]; the base is left frozen."""
    plans = [phase_plans(spec, phase, base, blocks, augment) for phase in spec.schedule]
    set_trainable(base, blocks, "none")
    return plans


def phase_plans(spec, phase, base, blocks, augment):
    """[a phase's plan], or a progressive phase's plans, one per round: top:1, top:2, ... each
    at `round_lr` times the rate of the round before."""
    if phase.trainable != "progressive":
        return [_plan(spec, phase, 0, base, blocks, augment)]
    last = min(phase.max_blocks or len(blocks), len(blocks))
    rounds = [dataclasses.replace(phase, name=f"{phase.name}-top{k}", trainable=f"top:{k}",
                                  lr=phase.lr * phase.round_lr ** (k - 1)) for k in range(1, last + 1)]
    return [_plan(spec, p, k, base, blocks, augment) for k, p in enumerate(rounds, 1)]


def _plan(spec, phase, round, base, blocks, augment):
    set_trainable(base, blocks, phase.trainable)
    tensor = cut(base) if phase.trainable.startswith("top:") else None
    source, why = _source(spec, phase, tensor, augment)
    return Plan(phase, round, source, tensor if source == "prefix" else None,
                block_factors(base, blocks, phase.trainable, phase.lr_mult), why)


def _source(spec, phase, tensor, augment):
    """(what the phase trains on, why prefix_cache on is not followed, or None)."""
    top = phase.trainable.startswith("top:")
    asked = spec.prefix_cache == "on" and top
    if spec.mixup or spec.cutmix:  # mixed images: no cached outputs of them
        return None, "mixup and cutmix mix the images of each step" if asked else None
    if phase.trainable == "none":
        return ("head" if spec.feature_cache else None), None
    honest = augment.empty or spec.feature_copies > 0
    wanted = spec.prefix_cache == "on" or spec.prefix_cache == "auto" and honest
    if wanted and top and tensor is not None:
        return "prefix", None
    return None, f"{phase.trainable} leaves nothing frozen below it" if asked and tensor is None else None


def check_room(spec, plans, base, n_images):
    """Every phase's cached outputs (the head's features, a prefix's outputs) against the disk,
    before any work: one line if one would not fit, with the size it needs."""
    for plan in (plan for rounds in plans for plan in rounds if plan.source):
        out = plan.cut if plan.source == "prefix" else base.outputs[0]  # the head's: pooled over space
        shape = out.shape[1:] if plan.source == "prefix" else out.shape[-1:]
        per_image = math.prod(shape) * np.dtype(out.dtype).itemsize
        need = per_image * n_images * (spec.feature_copies + 1)
        room(need, spec.cache_mb, cache_dir(spec), WITHOUT[plan.source])


def open_plan(base, blocks, plan):
    """The base opened as the plan says (each phase opens it anew: flags set by the planning of
    later phases, or by an earlier phase, do not count)."""
    set_trainable(base, blocks, plan.phase.trainable)
