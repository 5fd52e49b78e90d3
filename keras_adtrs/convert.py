"""`python -m keras_adtrs.convert`: the ADTRS authors' PyTorch weights -> a Keras `.keras` model.

The conversion itself is `keras_adtrs.models.conversion` (no PyTorch needed
for `.npz` state dicts; `.pth`/`.pt` checkpoints need torch)::

    python -m keras_adtrs.convert CKPT.pth --output model.keras
    python -m keras_adtrs.convert weights.npz --output model.keras \\
        --input-normalization none

The library is imported in `main()`, after `keras_adtrs.console` has quieted
TensorFlow's start-up.
"""

import argparse
import sys

from keras_adtrs import console


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m keras_adtrs.convert",
        description="Convert the ADTRS authors' PyTorch weights to a Keras .keras model.",
    )
    parser.add_argument("checkpoint", help="a .pth/.pt state dict (needs torch) or an .npz of name -> array")
    parser.add_argument("--output", "-o", required=True, help="where to write the .keras model")
    parser.add_argument(
        "--input-normalization",
        choices=("torch", "none"),
        default="torch",
        help="'torch': the model takes RGB in [0, 255] (default); 'none': already-normalised input",
    )
    parser.add_argument(
        "--crop-size", type=int, default=224, help="input side, a multiple of 32 up to 224 (default 224)"
    )
    return parser


def main(argv=None):
    """Command line entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    if not args.output.endswith(".keras"):
        print(f"error: --output must end with .keras, got {args.output}", file=sys.stderr)
        return 2
    console.quiet_tensorflow()
    from keras_adtrs.models.conversion import from_torch_state_dict, load_state_dict

    try:
        state_dict = load_state_dict(args.checkpoint)
        normalization = None if args.input_normalization == "none" else args.input_normalization
        model = from_torch_state_dict(state_dict, input_normalization=normalization, crop_size=args.crop_size)
    except (ImportError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    model.save(args.output)
    print(
        f"converted {len(state_dict)} tensors from {args.checkpoint} -> {args.output} "
        f"(crop {args.crop_size}, input normalization {args.input_normalization}, "
        f"{model.count_params():,} parameters)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
