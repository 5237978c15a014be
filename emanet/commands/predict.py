"""emanet predict."""

from __future__ import annotations

import argparse
from pathlib import Path

from emanet.commands.common import add_params_file_options, add_set_option


def predict(args: argparse.Namespace) -> int:
    from emanet.config import load_params, resolve
    from emanet.engine.predict import predict_images
    from emanet.runs.folder import run_dir as run_folder

    cfg = resolve(load_params(args.params), args.profile, args.set, args.experiment)
    run_dir = run_folder(args.results or f"results/{cfg.profile}", cfg.experiment)
    scales = None
    if args.multi_scale:
        scales = [float(v) for v in args.scales.split(",")] if args.scales else list(cfg.eval.scales)
    bases = _bases(args.bases) if args.bases else []
    result = predict_images(
        cfg,
        run_dir,
        args.inputs,
        Path(args.out),
        Path(args.weights) if args.weights else None,
        args.format,
        scales,
        args.flip,
        bases,
        progress=not args.quiet,
    )
    print(
        f"{len(result.written)} image(s) predicted into {args.out}"
        + (
            f"; {len(result.failed)} skipped (reasons above): {', '.join(map(str, result.failed))}"
            if result.failed
            else ""
        )
    )
    return 1 if result.failed else 0


def _bases(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--bases: expected comma-separated basis indices such as 0,5,12, got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment your own images with an experiment's model",
        description="Writes, for each input image, OUT/<stem>.png (class ids at the input's size, "
        "VOC palette) and OUT/<stem>_overlay.jpg (the image with the class colours and a "
        "legend of the classes present); with --bases, OUT/<stem>_basis<k>.png, the EMA "
        "bases' responsibility maps. The experiment gives the architecture; the weights "
        "are its run's model.pt or --weights. EXIF orientation is applied; unreadable "
        "files are reported and skipped (exit status 1).",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders (the images directly inside)")
    p.add_argument("--experiment", required=True, help="a key of params.yaml's experiments (the architecture)")
    add_params_file_options(p)
    add_set_option(p, "train.device=cpu")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the predictions")
    p.add_argument(
        "--results", metavar="ROOT", help="results root holding runs/<experiment>/model.pt (default results/<profile>)"
    )
    p.add_argument(
        "--weights",
        metavar="FILE",
        help="use this checkpoint instead of the run's model.pt (any layout `emanet import-weights` reads)",
    )
    p.add_argument(
        "--format",
        choices=("auto", "official", "emanet"),
        default="auto",
        help="key naming of --weights (default: detect)",
    )
    p.add_argument("--multi-scale", action="store_true", help="average softmax over --scales")
    p.add_argument("--flip", action="store_true", help="add horizontally flipped inputs")
    p.add_argument("--scales", help="comma-separated (default: params eval.scales)")
    p.add_argument("--bases", metavar="K1,K2,...", help="write the responsibility maps of these EMA bases")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=predict)
