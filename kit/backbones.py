"""Backbone registry: everything backbone-specific lives in one entry (fastai's model_meta).

Adding a backbone is one entry; the schedule, model and pipeline never name a backbone.
Importing this module does not import TensorFlow.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Backbone:
    constructor: str  # name in keras.applications
    preprocess: str  # keras.applications.imagenet_utils mode: caffe | tf | torch, or none
    size: int  # default input side (the ImageNet training resolution)
    min_size: int  # smallest side keras.applications accepts
    blocks: tuple  # layer-name prefixes, bottom to top: `top:K` unfreezes the last K blocks
    weights_file: str  # include_top=False ImageNet file, for offline use (Keras cache name)


BACKBONES = {
    "vgg16": Backbone(
        "VGG16", "caffe", 224, 32,
        tuple(f"block{i}_" for i in range(1, 6)),
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "resnet50": Backbone(
        "ResNet50", "caffe", 224, 32,
        ("conv1_", "conv2_", "conv3_", "conv4_", "conv5_"),
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "xception": Backbone(
        "Xception", "tf", 299, 71,
        tuple(f"block{i}_" for i in range(1, 15)),
        "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
}
