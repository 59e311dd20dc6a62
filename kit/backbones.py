"""Backbone registry: everything backbone-specific lives in one entry (fastai's model_meta).

Adding a backbone is one entry; the schedule, model and pipeline never name a backbone. An
entry builds a keras.applications model, or a keras-hub backbone (`hub`: its class, its preset
on Kaggle Models, the arguments of a random-init one). Importing this module imports neither.

`blocks` say where each stage of the network begins, bottom to top (`top:K` trains the last K
and everything after them):
    "block7"          the first layer whose name starts with it
    "after:mixed9"    the layer right after the one of that name (Inception's blocks end in a
                      named layer; their first layers have numbered names)
    "encoder/layers_11"  a sublayer of a layer (a transformer encoder's blocks)
    "a|b"             either name, the first a backbone has (keras-hub renamed layers between
                      releases: ViT's tranformer_block_N in 0.26, Kaggle's image's)
"""
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backbone:
    constructor: str  # name in keras.applications, or of a keras_hub.models backbone class
    preprocess: str  # keras.applications.imagenet_utils mode: caffe | tf | torch, or none (inside)
    size: int  # default input side (the ImageNet training resolution)
    min_size: int  # smallest side it takes (a fixed-resolution transformer: its own)
    blocks: tuple  # where each stage begins, bottom to top (above)
    weights_file: str = ""  # include_top=False ImageNet file, for offline use (Keras cache name)
    preset: str = ""  # keras-hub: the preset on Kaggle Models (kaggle://owner/model/keras/variation/version)
    config: dict = field(default_factory=dict)  # keras-hub: the backbone's arguments, for random init
    step: int = 1  # the side is a multiple of it (a transformer's patches and windows)
    fixed: bool = False  # the pretrained weights take `size` only (position embeddings, windows)
    hub_version: str = ""  # keras-hub: the release that first has `constructor` (an older one: wheels)

    @property
    def hub(self):
        return bool(self.preset)

    @property
    def tokens(self):
        """The base gives (batch, tokens, channels), not a feature map (the transformers)."""
        return self.hub


def _efficientnet(b, size):
    blocks = ("stem_", *(f"block{i}" for i in range(1, 8)), "top_")
    return Backbone(f"EfficientNetB{b}", "none", size, 32, blocks, f"efficientnetb{b}_notop.h5")


def _efficientnet_v2(variant, size, stages):
    blocks = ("stem_", *(f"block{i}" for i in range(1, stages + 1)), "top_")
    file = f"efficientnetv2-{variant.lower()}_notop.h5"
    return Backbone(f"EfficientNetV2{variant}", "none", size, 32, blocks, file)


def _convnext(variant):
    n = f"convnext_{variant.lower()}"
    blocks = (f"{n}_stem", f"{n}_stage_0", *(f"{n}_downsampling_block_{i}" for i in range(3)))
    return Backbone(f"ConvNeXt{variant}", "none", 224, 32, blocks, f"{n}_notop.h5")


def _dinov2(variant, hidden, heads):
    return Backbone(
        "DINOV2Backbone", "torch", 224, 28, ("embeddings", *(f"encoder/layers_{i}" for i in range(12))),
        preset=f"kaggle://keras/dinov2/keras/dinov2_{variant}/1",
        config={"patch_size": 14, "num_layers": 12, "hidden_dim": hidden, "num_heads": heads,
                "intermediate_dim": 4 * hidden}, step=14, hub_version="0.22.0")


def _densenet(depth):
    blocks = ("conv1_", "conv2_", "pool2_", "pool3_", "pool4_")  # each dense block, the transition before it
    return Backbone(f"DenseNet{depth}", "torch", 224, 32, blocks,
                    f"densenet{depth}_weights_tf_dim_ordering_tf_kernels_notop.h5")


def _resnet(depth, version, preprocess):
    """The stem, then each residual block (conv5_block3 ...), as Xception's: a stage is too big a
    step to open at once (ResNet50's last is 19% of the forward pass, its last block 5.7%)."""
    per_stage = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}[depth]
    blocks = ("conv1_", *(f"conv{stage}_block{b}_" for stage, n in enumerate(per_stage, 2)
                          for b in range(1, n + 1)))
    return Backbone(f"ResNet{depth}{version.upper()}", preprocess, 224, 32, blocks,
                    f"resnet{depth}{version}_weights_tf_dim_ordering_tf_kernels_notop.h5")


BACKBONES = {
    "vgg16": Backbone("VGG16", "caffe", 224, 32, tuple(f"block{i}_" for i in range(1, 6)),
                      "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "vgg19": Backbone("VGG19", "caffe", 224, 32, tuple(f"block{i}_" for i in range(1, 6)),
                      "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    **{f"resnet{d}": _resnet(d, "", "caffe") for d in (50, 101, 152)},
    "xception": Backbone("Xception", "tf", 299, 71, tuple(f"block{i}_" for i in range(1, 15)),
                         "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    **{f"efficientnetb{b}": _efficientnet(b, size)
       for b, size in enumerate((224, 240, 260, 300, 380, 456, 528, 600))},
    **{f"efficientnetv2{v.lower()}": _efficientnet_v2(v, size, stages)
       for v, size, stages in (("B0", 224, 6), ("B1", 240, 6), ("B2", 260, 6), ("B3", 300, 6), ("S", 384, 6),
                               ("M", 480, 7), ("L", 480, 7))},
    **{f"convnext_{v.lower()}": _convnext(v) for v in ("Tiny", "Small", "Base", "Large", "XLarge")},
    **{f"densenet{d}": _densenet(d) for d in (121, 169, 201)},
    **{f"resnet{d}v2": _resnet(d, "v2", "tf") for d in (50, 101, 152)},
    "mobilenetv3small": Backbone(  # stages by resolution: the stem, then each stride-2 block onwards
        "MobileNetV3Small", "none", 224, 32,
        ("conv", "expanded_conv_d", "expanded_conv_1_", "expanded_conv_3_", "expanded_conv_8_"),
        "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
    "mobilenetv3large": Backbone(
        "MobileNetV3Large", "none", 224, 32,
        ("conv", "expanded_conv_1_", "expanded_conv_3_", "expanded_conv_6_", "expanded_conv_12_"),
        "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5"),
    "inceptionv3": Backbone(  # each Inception module (mixed1 ... mixed10)
        "InceptionV3", "tf", 299, 75, tuple(f"after:mixed{i}" for i in range(10)),
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "inceptionresnetv2": Backbone(  # the 35, 17 and 8 px stages, each with its reduction block
        "InceptionResNetV2", "tf", 299, 75, ("after:mixed_5b", "after:block35_10_ac", "after:block17_20_ac"),
        "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    # keras-hub transformers: weights from Kaggle Models (attached offline); fixed resolutions.
    "vit_b16": Backbone(
        "ViTBackbone", "tf", 224, 32,
        ("vit_patching_and_embedding",
         *(f"vit_encoder/transformer_block_{i}|tranformer_block_{i}" for i in range(1, 13))),
        preset="kaggle://keras/vit/keras/vit_base_patch16_224_imagenet/4",
        config={"patch_size": 16, "num_layers": 12, "num_heads": 12, "hidden_dim": 768, "mlp_dim": 3072},
        step=16, fixed=True),
    "swin_tiny": Backbone(
        "SwinTransformerBackbone", "torch", 224, 224,
        ("patch_embedding", "stage_0", "stage_1", "stage_2", "stage_3"),
        preset="kaggle://keras/swin-transformer/keras/swin_tiny_patch4_window7_224/1",
        config={"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "window_size": 7},
        step=224, fixed=True, hub_version="0.29.1"),
    "dinov2_small": _dinov2("small", 384, 6),
    "dinov2_base": _dinov2("base", 768, 12),
}

# A handful spanning the costs, for `make bench` (images/s of each frozen base).
COMPARED = ("mobilenetv3large", "efficientnetb0", "efficientnetv2b0", "resnet50", "efficientnetb3",
            "convnext_tiny", "dinov2_small", "vit_b16", "swin_tiny")
