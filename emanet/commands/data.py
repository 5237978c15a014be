"""emanet synth | download | prepare."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from emanet.commands.common import add_params_options, need, profile_config, synth_dir


def synth(args: argparse.Namespace) -> int:
    from emanet.data.synthetic.archives import synthesize

    cfg = profile_config(args)
    if cfg is not None and not cfg.sources.synthetic:  # keep the pipelines' stage list the same in every profile
        print(f"profile {cfg.profile!r} downloads the real archives (sources.synthetic is false): nothing to do")
        return 0
    out = args.out or (cfg and synth_dir(cfg))
    sizes = tuple(int(v) for v in args.image_size.split(","))
    print(synthesize(need(out, "--out"), args.images_per_split, args.seed, args.dataset or None, sizes))
    return 0


def download(args: argparse.Namespace) -> int:
    from emanet.data.archives import download as fetching
    from emanet.data.archives.catalog import WEIGHTS

    cfg = profile_config(args)
    if args.name == "weights":
        return _download_weights(args, cfg)
    mirrors, manifest, raw_dir = list(args.mirror), args.manifest, args.raw_dir
    if cfg is not None:
        raw_dir = raw_dir or (cfg.sources.weights_dir if args.name in WEIGHTS else cfg.sources.raw_dir)
        mirrors += cfg.sources.mirrors
        if cfg.sources.synthetic:
            mirrors.append(synth_dir(cfg).resolve().as_uri())
        manifest = manifest or cfg.sources.manifest
    entry = WEIGHTS.get(args.name)
    if entry and not (entry.download.checksums or entry.member_checksums):  # placed by hand, pinned on sight:
        from emanet.models.import_weights import check_not_web_page  # never pin a web page saved by mistake

        check_not_web_page(Path(need(raw_dir, "--raw-dir")) / entry.checkpoint_name)
    paths = fetching.fetch_named(args.name, need(raw_dir, "--raw-dir"), mirrors, manifest, progress=not args.quiet)
    fetching.write_receipt(Path(raw_dir) / "receipts" / f"{args.name}.json", paths)
    print("\n".join(map(str, paths)))
    return 0


def _download_weights(args: argparse.Namespace, cfg) -> int:
    """Every ImageNet checkpoint the profile's experiments need (none for tiny), and a receipt."""
    from emanet import plan
    from emanet.config import load_params
    from emanet.data.archives import download as fetching

    if cfg is None:
        raise ValueError("`emanet download weights` needs --params (it downloads what the experiments use)")
    names = plan.weights(load_params(args.params), cfg.profile)
    folder = Path(cfg.sources.weights_dir)
    paths = [
        p
        for name in names
        for p in fetching.fetch_named(
            name, folder, list(args.mirror) + cfg.sources.mirrors, args.manifest, progress=not args.quiet
        )
    ]
    fetching.write_receipt(folder / "receipt.json", paths)
    print("\n".join(map(str, paths)) or f"{cfg.profile}: no ImageNet checkpoint needed")
    return 0


def prepare(args: argparse.Namespace) -> int:
    from emanet.data.convert.official import OFFICIAL_COUNTS
    from emanet.data.convert.prepare import prepare as convert

    cfg = profile_config(args)
    raw_dir = args.raw_dir or (cfg and cfg.sources.raw_dir)
    out = args.out or (cfg and cfg.data.root)
    manifest = args.manifest or (cfg and cfg.sources.manifest)
    if args.no_count_check:
        expected = None
    elif manifest:
        expected = _manifest_counts(Path(manifest), args.dataset)
    else:
        expected = OFFICIAL_COUNTS[args.dataset]
    print(
        convert(
            args.dataset,
            need(raw_dir, "--raw-dir"),
            need(out, "--out"),
            expected,
            args.workers,
            progress=not args.quiet,
        )
    )
    return 0


def _manifest_counts(path: Path, dataset: str) -> dict[str, int]:
    """split -> count of ``dataset`` from an `emanet synth` manifest (UTF-8 JSON); errors name the file."""
    from emanet.data.files import DataError
    from emanet.textfile import read_text_file

    try:
        counts = json.loads(read_text_file(path, DataError))["counts"][dataset]
    except FileNotFoundError:
        raise DataError(f"{path}: manifest not found (`emanet synth` writes one beside the archives)") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); regenerate it with `emanet synth`") from None
    except (KeyError, TypeError):
        raise DataError(
            f"{path}: has no split counts for {dataset!r} (a manifest of `emanet synth --dataset {dataset}` has them)"
        ) from None
    if not isinstance(counts, dict) or not all(isinstance(n, int) for n in counts.values()):
        raise DataError(f"{path}: counts.{dataset} must map split names to integers, got {counts!r}")
    return counts


def register(sub: argparse._SubParsersAction) -> None:
    from emanet.data.archives.catalog import DATASETS, WEIGHTS
    from emanet.data.convert.prepare import CONVERTERS
    from emanet.data.synthetic.archives import SAME_ARCHIVES, WRITERS

    p = sub.add_parser(
        "synth",
        help="write small archives in the official formats (tiny profile, tests)",
        description="Writes, for every archive the paper profile downloads, a small one with the "
        "official name, layout and formats, plus manifest.json (name, size, sha256, "
        "split counts) for `emanet download --manifest` and `emanet prepare --manifest`.",
    )
    p.add_argument("--out", help="folder for the archives (default with --params: beside sources.manifest)")
    add_params_options(p)
    p.add_argument("--images-per-split", type=int, default=12, help="images per split (default 12)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", default="80,128", metavar="MIN,MAX", help="image side range (default 80,128)")
    p.add_argument("--dataset", action="append", choices=[*WRITERS, *SAME_ARCHIVES], help="only these (repeatable)")
    p.set_defaults(handler=synth)

    p = sub.add_parser(
        "download",
        help="fetch a dataset's archives or an ImageNet checkpoint, verified",
        description="Resumable, checksummed download of every file NAME needs. Mirrors are "
        "tried first (each a base URL holding the files under their names), then "
        "the catalog's URLs. file:// and http(s):// URLs work.",
    )
    p.add_argument(
        "name",
        choices=[*DATASETS, *WEIGHTS, "weights"],
        metavar="NAME",
        help=f"one of: {', '.join([*DATASETS, *WEIGHTS])}; or 'weights' with --params: every "
        "checkpoint the profile's experiments need",
    )
    p.add_argument(
        "--raw-dir",
        help="folder for the downloaded files (default with --params: sources.raw_dir, "
        "or sources.weights_dir for checkpoints)",
    )
    add_params_options(p)
    p.add_argument("--mirror", action="append", default=[], metavar="URL", help="mirror base URL (repeatable)")
    p.add_argument(
        "--manifest", metavar="PATH", help="JSON manifest (name, size, sha256) whose checksums replace the catalog's"
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress report for downloading and hashing (by default: a bar on a terminal, "
        "plain lines with size, rate and ETA in a log)",
    )
    p.set_defaults(handler=download)

    p = sub.add_parser(
        "prepare",
        help="convert official archives or trees to the uniform layout",
        description="Converts DATASET from its downloaded archives (or an extracted official tree, "
        "or for voc an existing SegmentationClassAug/) into OUT/DATASET/{images,labels,"
        "splits,meta.json}. The official split counts are asserted unless told otherwise.",
    )
    p.add_argument("dataset", choices=sorted(CONVERTERS))
    p.add_argument(
        "--raw-dir", help="folder with the archives or extracted trees (default with --params: sources.raw_dir)"
    )
    p.add_argument("--out", help="output root, the dataset goes to OUT/DATASET (default with --params: data.root)")
    add_params_options(p)
    checks = p.add_mutually_exclusive_group()
    checks.add_argument("--no-count-check", action="store_true", help="do not assert split counts")
    checks.add_argument("--manifest", metavar="PATH", help="assert the counts of an `emanet synth` manifest instead")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="conversion processes")
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress report for the conversion (by default: a bar on a terminal, plain lines "
        "with counts, rate and ETA in a log); extracting an archive still reports when it takes "
        "longer than 2 s",
    )
    p.set_defaults(handler=prepare)
