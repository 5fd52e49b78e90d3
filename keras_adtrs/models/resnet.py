"""The ResNet50 stages in two layouts: the four stage outputs an `ADTRSBackbone` reads.

- `resnet50`: `keras.applications.ResNet50` ("v1": stride in the first 1x1
  conv of a stage, convs with bias; weights `imagenet` use "caffe" input
  normalisation).
- `resnet50_v1_5`: torchvision's ResNet50, which the ADTRS authors use,
  rebuilt from Keras layers. It differs from "v1": the stride-2 of a stage's
  first block sits in its 3x3 conv (not its first 1x1 conv), convs have no
  biases, padding is explicit and symmetric, and BatchNorm's epsilon is
  `1e-5`. Weights of one layout do not load into the other;
  `keras_adtrs.models.conversion` moves torchvision (and ADTRS) PyTorch
  weights into this one. Layer names follow the torch parameter names with
  `.` written `_`: `conv1`, `bn1`, `layer1_0_conv1`, `layer1_0_bn1`,
  `layer1_0_downsample_0`, `layer1_0_downsample_1`, ... so
  `model.layer2.3.bn2.weight` lives in the Keras layer `layer2_3_bn2` as
  `gamma`.

`keras_adtrs.models.backbone.ADTRSBackbone` builds on these; weight loading
(ImageNet download, local files) lives in `keras_adtrs.models.weights`.
"""

import keras

from keras_adtrs.errors import SettingError

#: Layer names of the stage outputs l1..l4 in keras.applications.ResNet50.
RESNET50_STAGE_LAYERS = (
    "conv2_block3_out",
    "conv3_block4_out",
    "conv4_block6_out",
    "conv5_block3_out",
)

STAGE_CHANNELS = (256, 512, 1024, 2048)

#: Backbone name -> the input normalisation its pretrained weights expect.
BACKBONE_INPUT_NORMALIZATION = {"resnet50": "caffe", "resnet50_v1_5": "torch"}


def set_batchnorm_momentum(model, momentum):
    """Sets the moving-statistics momentum of every BatchNormalization layer."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def resnet50_stages(crop_size, batchnorm_momentum=0.99, name="resnet50"):
    """keras.applications ResNet50 (random weights) returning `[l1, l2, l3, l4]`.

    Args:
        crop_size: int. Square input side.
        batchnorm_momentum: float. Momentum of its BatchNorm layers
            (Keras' ResNet50 default is 0.99).
        name: str. Name of the returned functional model.
    """
    base = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(crop_size, crop_size, 3)
    )
    set_batchnorm_momentum(base, batchnorm_momentum)
    outputs = [base.get_layer(n).output for n in RESNET50_STAGE_LAYERS]
    return keras.Model(base.input, outputs, name=name)


# ------------------------------------------------ torchvision layout (v1.5)
#: Bottleneck blocks per stage (layer1..layer4) of ResNet50.
RESNET50_BLOCKS = (3, 4, 6, 3)
#: Bottleneck width (channels of its 1x1 and 3x3 convs) per stage.
RESNET50_WIDTHS = (64, 128, 256, 512)
#: Bottleneck channel expansion: output channels = 4 * width.
EXPANSION = 4
#: torch.nn.BatchNorm2d's default epsilon.
TORCH_BATCHNORM_EPSILON = 1e-5


def _conv(x, filters, kernel_size, strides, name):
    """Bias-free conv with torch's symmetric zero padding `kernel_size // 2`."""
    pad = kernel_size // 2
    if pad:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="valid",
        use_bias=False,
        name=name,
    )(x)


def _bn(x, momentum, name):
    return keras.layers.BatchNormalization(
        momentum=momentum, epsilon=TORCH_BATCHNORM_EPSILON, name=name
    )(x)


def _bottleneck(x, width, strides, downsample, momentum, name):
    """torchvision `Bottleneck`: 1x1 -> 3x3 (stride here) -> 1x1, + identity."""
    shortcut = x
    y = _conv(x, width, 1, 1, f"{name}_conv1")
    y = _bn(y, momentum, f"{name}_bn1")
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv(y, width, 3, strides, f"{name}_conv2")
    y = _bn(y, momentum, f"{name}_bn2")
    y = keras.layers.ReLU(name=f"{name}_relu2")(y)
    y = _conv(y, width * EXPANSION, 1, 1, f"{name}_conv3")
    y = _bn(y, momentum, f"{name}_bn3")
    if downsample:
        shortcut = _conv(x, width * EXPANSION, 1, strides, f"{name}_downsample_0")
        shortcut = _bn(shortcut, momentum, f"{name}_downsample_1")
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def resnet50_v1_5_stages(crop_size, batchnorm_momentum=0.9, name="resnet50_v1_5"):
    """torchvision's ResNet50 layout returning the four stage outputs.

    A functional model `image -> [l1, l2, l3, l4]`, the outputs of torch's
    `layer1`..`layer4`: for a `crop_size` input they are
    `(B, crop/4, crop/4, 256)`, `(B, crop/8, crop/8, 512)`,
    `(B, crop/16, crop/16, 1024)` and `(B, crop/32, crop/32, 2048)`.
    Weights are randomly initialised; load torchvision or ADTRS PyTorch
    weights with `keras_adtrs.models.conversion`. The input is expected normalised as
    torchvision's ImageNet models expect (RGB, `(x / 255 - mean) / std`).
    Built from `keras.layers` only, so it runs on any Keras backend.

    Args:
        crop_size: int. Side of the square input.
        batchnorm_momentum: float. Moving-statistics momentum of every
            BatchNorm layer, in Keras' convention (torch's `momentum=0.1` is
            Keras' `0.9`). Defaults to `0.9`.
        name: str. Name of the returned model. `keras_adtrs.models.weights` finds an
            ADTRS model's backbone by a name starting with `"resnet50"`.
            Defaults to `"resnet50_v1_5"`.

    Returns:
        A `keras.Model` with one input `(crop_size, crop_size, 3)` and a list
        of four outputs.

    Example:
    >>> backbone = resnet50_v1_5_stages(64)
    >>> [tuple(t.shape) for t in backbone(np.zeros((1, 64, 64, 3)))]
    [(1, 16, 16, 256), (1, 8, 8, 512), (1, 4, 4, 1024), (1, 2, 2, 2048)]
    """
    momentum = batchnorm_momentum
    images = keras.Input((crop_size, crop_size, 3), name="images")
    x = _conv(images, 64, 7, 2, "conv1")
    x = _bn(x, momentum, "bn1")
    x = keras.layers.ReLU(name="relu")(x)
    # torch pads the max pool with -inf; after a ReLU every value is >= 0, so
    # zero padding gives the same maximum.
    x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    stages = []
    for stage, (blocks, width) in enumerate(zip(RESNET50_BLOCKS, RESNET50_WIDTHS), start=1):
        for block in range(blocks):
            strides = 2 if (block == 0 and stage > 1) else 1
            x = _bottleneck(
                x,
                width,
                strides=strides,
                downsample=block == 0,
                momentum=momentum,
                name=f"layer{stage}_{block}",
            )
        stages.append(x)
    return keras.Model(images, stages, name=name)


def build_stages(architecture, crop_size, batchnorm_momentum):
    """The functional ResNet50 stages `image -> [l1, l2, l3, l4]` of an architecture, by name.

    Raises:
        SettingError: an unknown architecture (setting `backbone`).
    """
    if architecture == "resnet50":
        return resnet50_stages(crop_size, batchnorm_momentum)
    if architecture == "resnet50_v1_5":
        return resnet50_v1_5_stages(crop_size, batchnorm_momentum)
    raise SettingError("backbone", f"must be one of {sorted(BACKBONE_INPUT_NORMALIZATION)}, got {architecture!r}")
