"""Backbones: the four ResNet50 stage outputs ADTRS reads.

`resnet50` is `keras.applications.ResNet50` ("v1": stride in the first 1x1
conv of a stage, convs with bias; weights `imagenet` use "caffe" input
normalisation). Weight loading (ImageNet download, local files) lives in
`keras_adtrs.models.weights`.
"""

import keras

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


def build_backbone(backbone, crop_size, batchnorm_momentum):
    """Functional backbone `image -> [l1, l2, l3, l4]` by name."""
    if backbone == "resnet50":
        return resnet50_stages(crop_size, batchnorm_momentum)
    if backbone == "resnet50_v1_5":
        from keras_adtrs.models.backbones_torchvision import resnet50_v1_5_stages

        return resnet50_v1_5_stages(crop_size, batchnorm_momentum)
    raise ValueError(
        f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONE_INPUT_NORMALIZATION)}"
    )
