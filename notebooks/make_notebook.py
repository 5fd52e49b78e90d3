"""Writes notebooks/train_and_evaluate.ipynb (outputs stripped). Run after editing the cells here."""

import pathlib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = [
    new_markdown_cell(
        "# Train and evaluate ADTRS with `model.fit`\n\n"
        "Build the model, train it on the embedded default data set, look at the learning curves, "
        "evaluate on the test split with a scatter plot, export a SavedModel for TF Serving and score "
        "images through it.\n\n"
        "Set `KERAS_ADTRS_NOTEBOOK_SMOKE=1` to shrink everything to a tiny size (CI runs it that way)."
    ),
    new_code_cell(
        "import os, tempfile, time\n"
        "import numpy as np\n"
        "import keras\n"
        "import keras_adtrs\n"
        "from keras_adtrs.data.registry import load_source\n"
        "from keras_adtrs.data.splits import split_by_group\n"
        "from keras_adtrs.data.pipeline_tensorflow import training_dataset, steps_per_epoch\n"
        "from keras_adtrs.training.callbacks import ObjectiveWarmup, ValidationMetrics\n"
        "\n"
        "SMOKE = os.environ.get('KERAS_ADTRS_NOTEBOOK_SMOKE') == '1'\n"
        "CROP = 64\n"
        "EPOCHS = 1 if SMOKE else 8\n"
        "CROPS_PER_IMAGE = 1 if SMOKE else 2\n"
        "WARMUP_EPOCHS = 0 if SMOKE else 7  # quality terms only, full ADTRS in the last epoch (see docs/training.md)\n"
        "TEST_CROPS = 1 if SMOKE else 9\n"
        "BATCH = 8 if SMOKE else 16\n"
        "# Outputs (model, export, plots): KERAS_ADTRS_NOTEBOOK_OUT, or a new temporary folder.\n"
        "OUT = os.environ.get('KERAS_ADTRS_NOTEBOOK_OUT') or tempfile.mkdtemp(prefix='adtrs-notebook-')\n"
        "os.makedirs(OUT, exist_ok=True)\n"
        "keras.utils.set_random_seed(0)\n"
        "started = time.time()"
    ),
    new_markdown_cell(
        "## Data\n\nThe default set needs no download: procedural references, five distortions at five "
        "levels, labelled by `100 * SSIM`. It is split by reference image."
    ),
    new_code_cell(
        "source = load_source('default', num_references=6 if SMOKE else 60, verbose=False)\n"
        "split = split_by_group(source.groups, test_fraction=0.2, validation_fraction=0.1 if not SMOKE else 0.25, seed=0)\n"
        "train, val, test = (source.subset(i) for i in (split.train, split.validation, split.test))\n"
        "print(len(train), 'train', len(val), 'validation', len(test), 'test images')"
    ),
    new_markdown_cell(
        "To train on a public set instead, point `manual_dir` at its release files "
        "(see `keras_adtrs.data.tfds` for the exact layouts), for example:\n\n"
        "```python\n"
        "source = load_source('live_challenge', manual_dir='/data/ChallengeDB_release')  # LIVE-C, split by image\n"
        "source = load_source('koniq10k', manual_dir='/data/koniq10k')                  # KonIQ-10k\n"
        "CROP = 224\n"
        "```"
    ),
    new_markdown_cell("## Model and `fit`\n\nThe ADTRS objective is built into the model: `compile(optimizer=...)` is enough."),
    new_code_cell(
        "model = keras_adtrs.build_adtrs(\n"
        "    crop_size=CROP,\n"
        "    backbone_weights=None,  # 'imagenet' when the download is possible\n"
        "    score_scale=float(train.scores.std()), score_offset=float(train.scores.mean()),\n"
        ")\n"
        "steps = steps_per_epoch(len(train), CROPS_PER_IMAGE, BATCH)\n"
        "model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(5e-4, steps * EPOCHS, alpha=0.01)))\n"
        "data = training_dataset(train.images, train.scores, CROP, crops_per_image=CROPS_PER_IMAGE, batch_size=BATCH, seed=0, epochs=EPOCHS)\n"
        "best_path = os.path.join(OUT, 'model.keras')\n"
        "history = model.fit(\n"
        "    data, epochs=EPOCHS, steps_per_epoch=steps, verbose=2, shuffle=False,  # the dataset is shuffled, seeded\n"
        "    callbacks=[ObjectiveWarmup(WARMUP_EPOCHS), ValidationMetrics(val.images, val.scores, crops=TEST_CROPS),\n"
        "               keras.callbacks.ModelCheckpoint(best_path, monitor='val_srcc', mode='max', save_best_only=True)],\n"
        ")\n"
        "model = keras.saving.load_model(best_path)"
    ),
    new_markdown_cell("## Learning curves"),
    new_code_cell(
        "import matplotlib\n"
        "import matplotlib.pyplot as plt\n"
        "h = history.history\n"
        "fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))\n"
        "for name in ('loss', 'quality', 'ranking', 'ranking_consistency', 'consistency'):\n"
        "    axes[0].plot(range(1, len(h[name]) + 1), h[name], marker='o', label=name)\n"
        "axes[0].set_yscale('log'); axes[0].set_xlabel('epoch'); axes[0].legend(); axes[0].set_title('training terms')\n"
        "axes[1].plot(range(1, len(h['val_srcc']) + 1), h['val_srcc'], marker='o', label='val SRCC')\n"
        "axes[1].plot(range(1, len(h['val_plcc']) + 1), h['val_plcc'], marker='o', label='val PLCC')\n"
        "axes[1].set_xlabel('epoch'); axes[1].legend(); axes[1].set_title('validation')\n"
        "plt.tight_layout(); plt.show()"
    ),
    new_markdown_cell("## Evaluation on the test split"),
    new_code_cell(
        "from keras_adtrs.inference.evaluation import evaluate_predictions, format_metrics_table, scatter_plot\n"
        "predictions = keras_adtrs.score(model, test.images, crops=TEST_CROPS)\n"
        "result = evaluate_predictions(predictions, test.scores, bootstrap=0 if SMOKE else 1000)\n"
        "print(format_metrics_table(result))\n"
        "plot_path = scatter_plot(predictions, test.scores, os.path.join(OUT, 'scatter.png'), title_metrics=result, title='default set, test split') or os.path.join(OUT, 'scatter.png')\n"
        "from IPython.display import Image, display\n"
        "display(Image(filename=os.path.join(OUT, 'scatter.png')))"
    ),
    new_markdown_cell(
        "## Starting from a pre-trained backbone (`init_from`)\n\n"
        "Without ImageNet weights, `python -m keras_adtrs.pretrain` teaches the backbone and the attention block "
        "what distortions look like, from unlabelled photos and no human score (see docs/pretraining.md). "
        "`build_adtrs(init_from=...)` then starts from its backbone (the ResNet stages and the attention block; "
        "`model.backbone` is an `ADTRSBackbone`) or from any earlier `.keras`; "
        "the head and the score scale come from the new labels, as above. Here a few pre-training steps on the "
        "default set's procedural references stand in for a real run on photos."
    ),
    new_code_cell(
        "from keras_adtrs.training.config import PretrainConfig\n"
        "from keras_adtrs.training.pretraining import run_pretraining\n"
        "pretrain_dir = os.path.join(OUT, 'pretrain')\n"
        "run_pretraining(PretrainConfig(crop_size=CROP, steps=4 if SMOKE else 250, steps_per_epoch=2 if SMOKE else 125,\n"
        "                               procedural_references=8 if SMOKE else 200, output_dir=pretrain_dir, verbose=0))\n"
        "finetuned = keras_adtrs.build_adtrs(\n"
        "    crop_size=CROP, init_from=os.path.join(pretrain_dir, 'model.keras'),\n"
        "    score_scale=float(train.scores.std()), score_offset=float(train.scores.mean()),\n"
        ")\n"
        "pretrained = keras_adtrs.load_model(os.path.join(pretrain_dir, 'model.keras'))\n"
        "same = [np.array_equal(a, b) for a, b in zip(pretrained.backbone.stages.get_weights(),\n"
        "                                              finetuned.backbone.stages.get_weights())]\n"
        "print(f'backbone arrays copied from the pre-trained model: {sum(same)} of {len(same)}')\n"
        "print(finetuned.backbone_weights_info)\n"
        "# Fine-tune with the controls of LP-FT: the head alone first, then everything at a tenth of its rate,\n"
        "# BatchNorm statistics fixed (docs/training.md).\n"
        "finetuned.compile(optimizer=keras.optimizers.Adam(1e-3), backbone_lr_ratio=0.1, freeze_batchnorm=True,\n"
        "                  linear_probe_epochs=1)\n"
        "finetuned.fit(data.repeat(), epochs=2, steps_per_epoch=steps, verbose=2)"
    ),
    new_markdown_cell("## Export for TF Serving, and score through the SavedModel"),
    new_code_cell(
        "import io\n"
        "import tensorflow as tf\n"
        "from PIL import Image as PILImage\n"
        "from keras_adtrs.serving.export import export_model\n"
        "version_dir = export_model(model, os.path.join(OUT, 'export'), num_crops=TEST_CROPS)\n"
        "print('exported to', version_dir)\n"
        "served = tf.saved_model.load(version_dir).signatures['serving_default']\n"
        "def png(array):\n"
        "    buffer = io.BytesIO(); PILImage.fromarray(array).save(buffer, format='PNG'); return buffer.getvalue()\n"
        "some = test.images[:4]\n"
        "via_saved_model = served(image_bytes=tf.constant([png(a) for a in some]))['score'].numpy()\n"
        "via_keras = keras_adtrs.score(model, some, crops=TEST_CROPS)\n"
        "print(np.c_[via_saved_model, via_keras, test.scores[:4]])\n"
        "assert np.allclose(via_saved_model, via_keras, atol=1e-3)\n"
        "print(f'notebook ran in {time.time() - started:.0f} s')"
    ),
]

for number, cell in enumerate(cells):
    cell["id"] = f"cell-{number:02d}"  # stable ids: regenerating changes only edited cells

notebook = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
path = pathlib.Path(__file__).with_name("train_and_evaluate.ipynb")
nbformat.write(notebook, path)
print(path)
