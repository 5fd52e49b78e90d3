"""One check for any custom layer, in the manner of keras-hub's `TestCase.run_layer_test`.

`run_layer_test(LayerClass, init_kwargs, input_data, expected_output_shape)`:

1. builds the layer from `init_kwargs` and calls it on `input_data`: the
   output shape (or the shapes of a tuple/list/dict of outputs) must be
   `expected_output_shape`, and `compute_output_shape` must agree when the
   layer defines it;
2. checks the config round trip: `from_config(get_config())` gives the same
   config, the layer keeps one attribute per `__init__` argument holding the
   value it was given (or its default), and the config holds each of them;
3. saves a small functional model holding the layer as `.keras`, loads it
   with `keras.saving.load_model` and checks identical outputs (inference
   mode), the layer coming back as the same registered class.

Returns the layer (called on `input_data`) for layer-specific checks.
"""

import inspect
import os
import tempfile

import keras
import numpy as np


def _shapes(outputs):
    if isinstance(outputs, dict):
        return {k: tuple(v.shape) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return [tuple(v.shape) for v in outputs]
    return tuple(outputs.shape)


def _numpy(outputs):
    if isinstance(outputs, dict):
        return {k: keras.ops.convert_to_numpy(v) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return [keras.ops.convert_to_numpy(v) for v in outputs]
    return keras.ops.convert_to_numpy(outputs)


def _init_arguments(cls):
    """`{name: default}` of the `__init__` arguments, without `self` and `**kwargs`."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {
        p.name: p.default
        for p in parameters
        if p.name != "self" and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    }


def _assert_same(a, b, what):
    if isinstance(a, float) or isinstance(b, float):
        np.testing.assert_allclose(a, b, err_msg=what)
    else:
        assert a == b, (what, a, b)


def run_layer_test(layer_cls, init_kwargs, input_data, expected_output_shape, atol=1e-6, rtol=1e-6):
    """Shapes, the config round trip and `.keras` save/load of one custom layer.

    Args:
        layer_cls: the layer class (registered serializable).
        init_kwargs: dict. Arguments of the layer's `__init__`.
        input_data: numpy array with a batch axis.
        expected_output_shape: tuple (or list/dict of tuples for several
            outputs), batch axis included.
        atol, rtol: tolerances of the saved-and-loaded model's outputs.

    Returns:
        The layer, built and called once.
    """
    input_data = np.asarray(input_data)
    # 1. shapes
    layer = layer_cls(**init_kwargs)
    outputs = layer(input_data)
    assert _shapes(outputs) == expected_output_shape, (_shapes(outputs), expected_output_shape)
    if type(layer).compute_output_shape is not keras.layers.Layer.compute_output_shape:
        inferred = layer.compute_output_shape(input_data.shape)
        assert tuple(inferred) == tuple(expected_output_shape), (inferred, expected_output_shape)

    # 2. the config round trip, and one attribute per __init__ argument
    config = layer.get_config()
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config
    for name, default in _init_arguments(layer_cls).items():
        given = init_kwargs.get(name, default)
        assert hasattr(layer, name), f"{layer_cls.__name__} keeps no attribute for __init__ argument {name!r}"
        _assert_same(getattr(layer, name), given, f"{layer_cls.__name__}.{name}")
        assert name in config, f"{layer_cls.__name__}.get_config() lacks {name!r}"
        _assert_same(getattr(clone, name), getattr(layer, name), f"from_config: {layer_cls.__name__}.{name}")

    # 3. a .keras file of a small functional model holding the layer
    inputs = keras.Input(input_data.shape[1:], dtype=str(input_data.dtype))
    model = keras.Model(inputs, layer_cls(**init_kwargs)(inputs))
    expected = _numpy(model(input_data, training=False))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "layer.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
    assert any(type(sub) is layer_cls for sub in loaded.layers), [type(sub).__name__ for sub in loaded.layers]
    actual = _numpy(loaded(input_data, training=False))
    if isinstance(expected, dict):
        for key in expected:
            np.testing.assert_allclose(actual[key], expected[key], atol=atol, rtol=rtol, err_msg=key)
    elif isinstance(expected, list):
        for a, e in zip(actual, expected):
            np.testing.assert_allclose(a, e, atol=atol, rtol=rtol)
    else:
        np.testing.assert_allclose(actual, expected, atol=atol, rtol=rtol)
    return layer
