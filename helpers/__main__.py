"""Command line: ``python -m helpers {index,make-demo,pack,run-all,bench} ...``."""

from __future__ import annotations

import argparse
import json
import sys


def _index(args) -> int:
    from .index import build_index, save_index

    df, report = build_index(args.dir)
    if args.save:
        save_index(df, args.save)
    print(json.dumps(report.summary(examples=args.examples), indent=2))
    return 0


def _make_demo(args) -> int:
    from .config import PROFILES, demo_dir
    from .demo import make_demo

    patients = args.patients or PROFILES[args.profile]["demo_patients"]
    target = args.dir or demo_dir(patients)
    summary = make_demo(target, n_patients=patients, seed=args.seed, progress=True)
    print(json.dumps({k: str(v) if k == "root" else v for k, v in summary.items()}, indent=2))
    return 0


def _pack(args) -> int:
    from .index import build_index
    from .pipeline import pack

    df, report = build_index(args.dir)
    print(json.dumps({k: v for k, v in report.summary().items() if k != "skipped_examples"}))
    print(f"wrote {pack(df, args.out)}")
    return 0


def _run_all(args) -> int:
    from .run_all import main

    return main(args.profile, args.data_dir, out_dir=args.out, only=args.only, kernel=args.kernel)


def _bench(args) -> int:
    from .bench import main

    return main(args.data_dir, sample=args.sample)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="index an IDC data directory and print a JSON summary")
    p.add_argument("dir")
    p.add_argument("--save", help="also write the index as CSV here")
    p.add_argument("--examples", type=int, default=5, help="skipped files shown per category")
    p.set_defaults(func=_index)

    p = sub.add_parser("make-demo", help="write the generated demo data set (Kaggle layout)")
    p.add_argument("dir", nargs="?", help="target folder (default: data/demo/idc-<N>p)")
    p.add_argument("--profile", default="smoke", help="take the patient count from this profile")
    p.add_argument("--patients", type=int, help="number of patients (overrides the profile)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_make_demo)

    p = sub.add_parser("pack", help="decode a data directory once into OUT.npy + OUT.csv")
    p.add_argument("dir")
    p.add_argument("out")
    p.set_defaults(func=_pack)

    p = sub.add_parser("run-all", help="execute every notebook through papermill")
    p.add_argument("--profile", default="smoke")
    p.add_argument("--data-dir", default=None, help="real data; empty for the generated demo set")
    p.add_argument("--out", default=None, help="where executed notebooks go (outputs/notebooks)")
    p.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 00 01")
    p.add_argument("--kernel", default=None)
    p.set_defaults(func=_run_all)

    p = sub.add_parser("bench", help="images/s of the input pipelines")
    p.add_argument("--data-dir", default=None, help="default: ../shared/data/idc-sample, else the demo set")
    p.add_argument("--sample", type=int, default=None, help="use at most this many patches")
    p.set_defaults(func=_bench)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:  # user errors: one clear line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
