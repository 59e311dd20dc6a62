"""Fine-tuning phases on the frozen prefix's outputs. In a `top:K` phase only the top K blocks and
the head train; the base below them is frozen and runs in inference mode, so an image's output at
the cut (the tensor the opened blocks read) never changes during the phase. It is computed once
per image and per cached augmented copy (`feature_copies`, as for the head cache), and the phase
trains the opened blocks and the head on it: for VGG16's `top:1` that skips ~90% of the forward
FLOPs of every step.

The phase's model shares its layers (and the full model's optimizer) with the full model, so
training it trains the full model, and checkpoints and resuming work unchanged. A transformer's
blocks lie inside its encoder layer: its phases cache the patch embeddings.
"""
import keras

from kit.model import InferenceMode


def cut(base):
    """The tensor the part to train reads from the frozen part, or None (nothing opened, or all
    opened). The frozen part: every layer computed from the input alone without
    an opened layer; the cut: the last of its outputs from which the rest of the base can be
    computed alone (Inception's pooling branch is then recomputed from the block's input).
    Public Keras API only (an operation's `input` and `output` are those of its first call, the
    base's own: models built on its layers, as suffix_of's, call them again)."""
    ops = getattr(base, "operations", None)  # the layers and the plain operations between them
    if not base.trainable or not ops:
        return None
    made_by = {id(t): op for op in ops for t in keras.tree.flatten(op.output)}
    sources = lambda op: [made_by[id(t)] for t in keras.tree.flatten(op.input) if id(t) in made_by]
    weights = lambda op: getattr(op, "weights", [])
    opened = lambda op: getattr(op, "trainable", False) and weights(op)
    frozen, part = set(), []  # in the order they are computed
    for op in _in_order(ops, sources):
        if not opened(op) and all(id(s) in frozen for s in sources(op)):
            frozen.add(id(op))
            part.append(op)
    if len(part) == len(ops) or not any(weights(op) for op in part):
        return None  # nothing opened, or only a padding below what is
    inputs = {id(t) for t in keras.tree.flatten(base.inputs)}
    for op in reversed(part):
        tensor = keras.tree.flatten(op.output)[0]
        if _computable_from(tensor, base.outputs, made_by, inputs):
            return tensor
    return None


def _computable_from(tensor, outputs, made_by, inputs):
    """Whether `outputs` need nothing of the graph below `tensor`: no path from them back to the
    base's inputs goes around it. (keras 3.15 refuses such a keras.Model; 3.13 builds it and
    fails only when it is called.)"""
    todo, seen = list(keras.tree.flatten(outputs)), set()
    while todo:
        t = todo.pop()
        if t is tensor or id(t) in seen:
            continue
        if id(t) in inputs:
            return False
        seen.add(id(t))
        todo += keras.tree.flatten(made_by[id(t)].input) if id(t) in made_by else []
    return True


def _in_order(ops, sources):
    """The operations in an order where each comes after those it reads (depth first, without
    recursion: EfficientNetB7 is 800 layers deep)."""
    known, done, order = {id(op) for op in ops}, set(), []
    for op in ops:
        stack = [(op, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
            elif id(node) not in done and id(node) in known:
                done.add(id(node))
                stack.append((node, True))
                stack += [(s, False) for s in sources(node)]
    return order


def prefix_of(model, base, tensor):
    """raw images -> the base's output at the cut (the frozen part, in inference mode)."""
    inputs = keras.Input(model.inputs[0].shape[1:], dtype=model.inputs[0].dtype, name="image")
    frozen = keras.Model(base.inputs, tensor, name="frozen_prefix")
    return keras.Model(inputs, InferenceMode(frozen, name="prefix")(model.get_layer("preprocess")(inputs)))


def suffix_of(model, base, tensor):
    """(the cut's output -> the model's output, -> its pooled features): the opened blocks (in
    inference mode: BatchNorm statistics never move), the pool, dropout and head, all shared."""
    inputs = keras.Input(tensor.shape[1:], dtype=tensor.dtype, name="prefix_output")
    opened = keras.Model(tensor, base.outputs[0], name="opened_blocks")
    pooled = model.get_layer("pool")(InferenceMode(opened, name="opened")(inputs))
    head = model.get_layer("head")(model.get_layer("dropout")(pooled))
    return keras.Model(inputs, head), keras.Model(inputs, pooled)
