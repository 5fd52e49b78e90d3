import pathlib
import re

from setuptools import find_packages, setup

here = pathlib.Path(__file__).parent

#: One console script per command (`python -m keras_adtrs.<command>` does the same).
CONSOLE_SCRIPTS = [
    "adtrs-train=keras_adtrs.train:main",
    "adtrs-pretrain=keras_adtrs.pretrain:main",
    "adtrs-evaluate=keras_adtrs.evaluate:main",
    "adtrs-predict=keras_adtrs.predict:main",
    "adtrs-export=keras_adtrs.export:main",
    "adtrs-convert=keras_adtrs.convert:main",
    "adtrs-serving-client=keras_adtrs.serving.client:main",
    "keras-adtrs-train=keras_adtrs.train:main",  # the first name, kept as an alias
]
version = re.search(r'__version__ = "([^"]+)"', (here / "keras_adtrs" / "version.py").read_text()).group(1)

setup(
    name="keras-adtrs",
    version=version,
    description="ADTRS blind image quality assessment for Keras 3 and TensorFlow Serving",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["keras_adtrs", "keras_adtrs.*"]),
    include_package_data=True,
    package_data={
        "keras_adtrs": [
            "data/tfds/*/dummy_data/**/*",
            "data/tfds/*/*.txt",
            "data/tfds/*/*.tsv",
            "data/tfds/*/*.md",
            "data/tfds/*/*.bib",
        ]
    },
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "tensorboard>=2.20",
        "keras>=3.15,<3.16",
        "tensorflow-datasets>=4.9.8,<5",
        "tensorflow-serving-api>=2.21,<2.22",
        "grpcio>=1.60",
        "numpy>=1.26,<3",
        "scipy>=1.11",
        "pillow>=10",
        "matplotlib>=3.8",
        "tqdm>=4.66",
        "pyyaml>=6",
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "pytest-xdist>=3.6", "dill", "importlib_resources", "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29"],
        "jax": ["jax>=0.4.34"],
        "torch": ["torch>=2.1"],
        # Deployment beyond TF Serving (docs/deployment.md): the LiteRT interpreter, and the
        # ONNX converter and runtime. The LiteRT converter is TensorFlow's own.
        "litert": ["ai-edge-litert>=2.1"],
        "onnx": ["tf2onnx>=1.17", "onnx>=1.17", "onnxruntime>=1.20"],
        # Batch scoring at scale (docs/scale.md): Apache Beam's DirectRunner, Dataflow, Flink, Spark.
        # Add apache-beam[gcp] (or [aws]) on the workers for gs:// (s3://) paths.
        "beam": ["apache-beam>=2.60"],
    },
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
)
