"""Command line: ``python -m helpers {index,make-demo,pack,download,run-all,html,train,evaluate,bench,
make-breakhis-demo,pretrain-breakhis,make-thyroid-demo,index-thyroid,crossval} ...``."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
from pathlib import Path


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _print_json(doc) -> None:
    """``doc`` on stdout as JSON, an undefined score (NaN) as null: strict parsers refuse NaN."""
    from .io import json_safe

    print(json.dumps(json_safe(doc), indent=2, default=str, allow_nan=False))


@contextlib.contextmanager
def _json_only():
    """Anything Keras prints (epoch lines) goes to stderr: stdout is the JSON alone."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _late(name: str):
    """``helpers.<module>.<function>``, imported when a command runs: ``--help`` needs no TensorFlow."""
    module, _, function = name.rpartition(".")
    return getattr(importlib.import_module(f"helpers.{module}"), function)


def _prints(function, as_json: bool = True):
    """A command that prints what ``function(args)`` returns, as JSON or as text."""
    def command(args) -> int:
        (_print_json if as_json else print)(function(args))
        return 0
    return command


def _index(args) -> dict:
    from .data.index import build_index, save_index

    df, report = build_index(args.dir)
    if args.save:
        save_index(df, args.save)
    share = report.positives / max(1, report.unique_patches)
    _stderr(f"{report.unique_patches:,} usable patches of {report.patients} patients in {args.dir}, "
            f"{report.positives:,} IDC-positive (share {share:.3f}); {sum(report.skipped.values())} files skipped")
    return report.summary(examples=args.examples)


def _make_demo(args) -> dict:
    from .config import PROFILES, demo_dir, full_demo_dir
    from .data.demo import full_demo, make_demo
    from .data.source import ensure_demo

    if args.full:  # the real set's size and class counts: minutes on 2 cores, ~1.5 GB of PNG files
        root = args.dir or full_demo_dir()
        _stderr(f"writing the full-size generated set (277,524 patches) to {root}")
        return full_demo(root, seed=args.seed, workers=args.workers)
    if args.profile not in PROFILES:
        raise ValueError(f"unknown profile {args.profile!r}; choose one of {sorted(PROFILES)}")
    patients = args.patients or PROFILES[args.profile]["demo_patients"]
    if args.dir:
        return make_demo(args.dir, n_patients=patients, seed=args.seed, progress=True, workers=args.workers)
    # the project's own demo folder: a stale generated set there is replaced
    return ensure_demo(demo_dir(patients), patients, seed=args.seed)


def _pack(args) -> int:
    from .data.index import build_index
    from .data.pipeline import pack

    df, report = build_index(args.dir)
    print(json.dumps({k: v for k, v in report.summary().items() if k != "skipped_examples"}))
    print(f"wrote {pack(df, args.out)}")
    return 0


def _html(args) -> str:
    from .config import ROOT
    from .tools.site import render

    pages = render(args.notebooks or ROOT / "outputs" / "notebooks", args.out or ROOT / "outputs" / "html")
    return f"{len(pages) - 1} notebooks rendered; open {pages[-1]}"


def _options(pairs, flag) -> dict:
    """KEY=VALUE pairs, values read as JSON where they parse (1e-4, true, [16, 32]) else text."""
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} takes KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


# Flags that each set one recipe option, kept from before recipes (``--optimizer X`` is ``--set optimizer=X``);
# --dropout, --l2 and --kernel-size, like --build's pairs, are keywords of models.build_model: the option ``build``.
OPTION_FLAGS = {"model": "model", "optimizer": "optimizer", "lr": "learning_rate", "weights": "weights",
                "fine_tune_at": "fine_tune_at", "image_size": "image_size", "augment": "augment",
                "label_smoothing": "label_smoothing", "recalibrate_bn": "recalibrate_bn"}
BUILD_FLAGS = ("dropout", "l2", "kernel_size")


def _train_options(args) -> tuple[dict, dict]:
    """The recipe options a ``train`` command gives (its --set and --fit pairs, the flags of OPTION_FLAGS,
    and build_model's keywords (BUILD_FLAGS, --build) as ``build``) and the flag that gave each. One option
    given twice with two values is an error naming both flags."""
    given = [("--set", _options(args.set, "--set")), ("--fit", _options(args.fit, "--fit"))]
    given += [(f"--{dest.replace('_', '-')}", {option: getattr(args, dest)})
              for dest, option in OPTION_FLAGS.items() if getattr(args, dest) is not None]
    build = {k: getattr(args, k) for k in BUILD_FLAGS if getattr(args, k) is not None}
    build.update(_options(args.build, "--build"))
    if build:
        given.append(("--build", {"build": build}))
    options, said = {}, {}
    for flag, pairs in given:
        for key, value in pairs.items():
            if key in options and options[key] != value:
                raise ValueError(f"{said[key]} and {flag} both set the recipe option {key}; give it once")
            options[key], said[key] = value, flag
    return options, said


def _budget(args) -> tuple[int | None, int | None]:
    """(cap on patches or None for all, epochs or None for the recipe's): every usable patch unless
    ``--max-patches N`` says otherwise, or ``--profile P`` is given (its cap and epochs)."""
    from .config import PROFILES

    cap = args.max_patches
    if cap is not None and cap != 0 and cap < 2:  # told before TensorFlow loads, naming the flag
        raise ValueError(f"--max-patches must be 0 (all patches) or at least 2, got {cap}")
    if args.profile is None:
        return cap or None, args.epochs
    if args.profile not in PROFILES:
        raise ValueError(f"unknown profile {args.profile!r}; choose one of {', '.join(PROFILES)}")
    profile = PROFILES[args.profile]
    return (profile["sample_size"] if cap is None else cap or None), args.epochs or profile["epochs"]


def _check_dir_then_load_tensorflow(path, what: str = "data directory") -> None:
    """Check the folder (a wrong one is told in a second), then import TensorFlow without its chatter."""
    from .notebook import import_tensorflow_quietly

    if not Path(path).is_dir():
        raise FileNotFoundError(f"{what} {path} does not exist")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import_tensorflow_quietly()


def _train(args) -> dict:
    cap, epochs = _budget(args)
    if not args.recipe and not args.model:
        raise ValueError("train needs --model NAME (the recipe best with it) or --recipe NAME "
                         "(see helpers.recipes.recipe)")
    options, said = _train_options(args)
    _check_dir_then_load_tensorflow(args.data_dir)
    from .recipes import recipe

    fit = [key for key in options if said[key] == "--fit" and key not in recipe.OPTION_NAMES]
    if fit:  # --fit once took any keyword of train.fit
        raise ValueError(f"--fit {fit[0]}=...: {fit[0]!r} is not a recipe option; --fit sets recipe options, "
                         f"as --set does: {', '.join(recipe.OPTION_NAMES)}")
    chosen = recipe.get(args.recipe or "best", epochs=epochs, batch_size=args.batch_size, **options)
    with _json_only():
        return recipe.train_to_dir(chosen, args.data_dir, args.out, seed=args.seed, split_dir=args.split_dir,
                                   sample_size=cap, profile=args.profile, log=_stderr)


def _crossval(args) -> dict | list:
    cap, epochs = _budget(args)
    if args.shares and args.with_colour:
        raise ValueError("--with-colour compares one recipe with the colour baseline; run it without --shares")
    _check_dir_then_load_tensorflow(args.data_dir)
    from .recipes import crossval
    from .recipes.recipe import get as get_recipe

    if args.lockbox and (args.without_lockbox or args.shares or args.with_colour):
        raise ValueError("--lockbox scores one recipe once on the lockbox; run it without --without-lockbox, "
                         "--shares or --with-colour")
    options = _options(args.set, "--set")
    run_options = dict(folds="lockbox" if args.lockbox else args.folds, seed=args.seed, out_dir=args.out,
                       sample_size=cap, verbose=args.verbose,
                       keep_models=args.keep_models, reuse=not args.no_reuse)
    if args.shares:  # a learning curve: the recipe on each share and on all of it, whatever train_share says
        options.pop("train_share", None)
        by = options.pop("train_subset", "patches")
        with _json_only():
            results = crossval.run_shares(args.data_dir, get_recipe(args.recipe, **options), args.shares, by,
                                          epochs=epochs, **run_options)
        table = crossval.learning_curve(results)
        _stderr(table.to_string(float_format=lambda v: f"{v:.3f}"))
        return json.loads(table.reset_index(names="recipe").to_json(orient="records"))
    recipe = get_recipe(args.recipe, epochs=epochs, **options)
    data = crossval.load(args.data_dir, args.out)  # decoded once, for the recipe and the colour baseline
    if args.without_lockbox:
        whole = data.df["patient"].nunique()
        data = crossval.development(data)
        _stderr(f"the lockbox's {whole - data.df['patient'].nunique()} of {whole} patients are left out: "
                f"{data.df['patient'].nunique()} development patients, {len(data.labels):,} patches")
    with _json_only():
        result = crossval.run(args.data_dir, recipe, data=data, **run_options)
    _stderr(result.table())
    summary = result.as_dict()
    try:  # the same models under the eight decisions (threshold rule, TTA, slide context): no training
        summary["decisions"] = _paired_table(crossval.decision_table(result, data))
    except FileNotFoundError as err:  # folds trained before views.csv was kept
        _stderr(f"decisions not scored: {err}")
    if args.with_colour:  # the colour baseline on the same folds, and its average with the recipe
        from .recipes import colour

        baseline = colour.cross_validate(data, args.folds, args.seed, args.out, cap, log=_stderr)
        both = crossval.view_ensemble([result, baseline], data=data)
        summary["with_colour"] = _paired_table(crossval.compare([result, baseline, both]))
    return summary


def _select(args) -> dict:
    """Forward selection of ingredients on the development patients (``recipes.selection``)."""
    cap, epochs = _budget(args)
    if args.set or args.seed != 42:
        raise ValueError("select takes --seeds (two or more) and ingredients by name, not --seed or --set")
    if len(set(args.seeds)) < 2:
        raise ValueError(f"a verdict needs at least two seeds; --seeds gave {args.seeds}")
    _check_dir_then_load_tensorflow(args.data_dir)
    from .recipes import crossval, selection

    data = crossval.load(args.data_dir, args.out)
    whole = data.df["patient"].nunique()
    data = crossval.development(data)
    _stderr(f"choosing on {data.df['patient'].nunique()} development patients ({len(data.labels):,} patches); "
            f"the lockbox's {whole - data.df['patient'].nunique()} patients are never read")

    def score(name):
        with _json_only():
            return crossval.over_seeds(data, name, args.seeds, args.folds, out_dir=args.out, epochs=epochs,
                                       sample_size=cap, verbose=args.verbose)

    path = selection.forward_selection(args.base, args.ingredients, score, args.metric)
    _stderr(path.to_string(float_format=lambda v: f"{v:.4f}"))
    return {"chosen": selection.chosen(path, args.base), "metric": args.metric, "seeds": args.seeds,
            "folds": args.folds, "path": json.loads(path.to_json(orient="records"))}


def _paired_table(table) -> dict:
    """A paired comparison's means and differences as text on stderr; all its columns as JSON."""
    shown = ["f1", "balanced_accuracy", "roc_auc", "f1_diff", "balanced_accuracy_diff", "roc_auc_diff"]
    _stderr(table[shown].astype(float).to_string(float_format=lambda v: f"{v:.3f}"))
    return json.loads(table.astype(float).round(4).to_json(orient="index"))


def _evaluate(args) -> dict:
    _check_dir_then_load_tensorflow(args.data_dir)
    with _json_only():
        return _late("recipes.recipe.evaluate_dir")(args.model_path, args.data_dir, threshold=args.threshold,
                                                    log=_stderr)


def _make_thyroid_demo(args) -> dict:
    from .thyroid.generator import DEMO_SIZES, make_demo, resolve_dir
    from .thyroid.generator import demo_dir as thyroid_demo_dir

    if args.profile not in DEMO_SIZES:
        raise ValueError(f"unknown profile {args.profile!r}; choose one of {sorted(DEMO_SIZES)}")
    nodules, per_nodule = args.nodules or DEMO_SIZES[args.profile][0], args.images or DEMO_SIZES[args.profile][1]
    if args.dir or (nodules, per_nodule) != DEMO_SIZES[args.profile]:
        return make_demo(args.dir or thyroid_demo_dir(nodules), n_nodules=nodules, images_per_nodule=per_nodule,
                         seed=args.seed)
    # the project's own demo folder: a stale generated set there is replaced
    return json.loads((resolve_dir(None, args.profile, args.seed) / "generated.json").read_text())["summary"]


def _pretrain_breakhis(args) -> dict:
    from .breakhis.track import pretrain
    from .data.source import resolve

    out = Path(args.out)
    if out.suffix != ".keras":
        raise ValueError(f"--out must name a .keras file, got {out}")
    _check_dir_then_load_tensorflow(args.data_dir, "BreakHis directory")
    cfg = resolve(args.profile, data_dir=args.data_dir, output_dir=out.parent, epochs=args.epochs,
                  batch_size=args.batch_size, seed=args.seed, make_demo=False)
    with _json_only():
        return pretrain(cfg, args.data_dir, args.model, mode=args.mode, tiles_per_image=args.tiles,
                        weights=args.weights, out=out).as_dict()


def _parents() -> dict[str, argparse.ArgumentParser]:
    """Argument groups several commands share."""
    listing = argparse.ArgumentParser(add_help=False)
    listing.add_argument("dir")
    listing.add_argument("--examples", type=int, default=5, help="skipped files shown per category")
    demo = argparse.ArgumentParser(add_help=False)
    demo.add_argument("--seed", type=int, default=0)
    budget = argparse.ArgumentParser(add_help=False)  # train and crossval
    budget.add_argument("--data-dir", required=True)
    budget.add_argument("--epochs", type=int, help="at most this many (default: the recipe's, or the profile's)")
    budget.add_argument("--max-patches", "--sample-size", dest="max_patches", type=int,
                        help="use at most N patches (in each fold), spread over the splits by patient "
                        "(default and 0: all)")
    budget.add_argument("--profile", help="a budget from helpers.config.PROFILES (smoke, cpu, full): its epochs and "
                        "patch cap for what is not given (default: none; every patch, the recipe's epochs)")
    budget.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE", help="options of the recipe, "
                        "e.g. ensemble=5 stain=macenko (repeatable)")
    budget.add_argument("--seed", type=int, default=42, help="the folds', splits' and training's seed")
    return {"listing": listing, "demo": demo, "budget": budget}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    shared = _parents()

    def command(name, func, help, *parents):
        p = sub.add_parser(name, help=help, parents=[shared[k] for k in parents])
        p.set_defaults(func=func)
        return p

    p = command("index", _prints(_index), "index an IDC data directory and print a JSON summary", "listing")
    p.add_argument("--save", help="also write the index as CSV here")

    p = command("make-demo", _prints(_make_demo), "write the generated demo data set (Kaggle layout)", "demo")
    p.add_argument("dir", nargs="?", help="target folder (default: data/demo/idc-<N>p)")
    p.add_argument("--profile", default="smoke", help="take the patient count from this profile")
    p.add_argument("--patients", type=int, help="number of patients (overrides the profile)")
    p.add_argument("--full", action="store_true",
                   help="the real set's size: 277,524 patches of 279 patients (198,738 negative, 78,786 positive)")
    p.add_argument("--workers", type=int, help="processes drawing patients (default: one per core)")

    p = command("pack", _pack, "decode a data directory once into OUT.npy + OUT.csv")
    p.add_argument("dir")
    p.add_argument("out")

    p = command("download", _prints(lambda a: _late("data.download.download_idc")(
        a.dest, method=a.method, force=a.force), as_json=False), "download the full Kaggle IDC set once (public, no "
        "token), check its counts and print its root; a set checked before is reused without network")
    p.add_argument("--dest", default=None, help="where it goes (default: data/idc in the repository)")
    p.add_argument("--method", default="kagglehub", choices=("kagglehub", "cli"))
    p.add_argument("--force", action="store_true", help="download and check again")

    p = command("run-all", lambda a: _late("tools.run_all.main")(
        a.profile, a.data_dir, out_dir=a.out, only=a.only, kernel=a.kernel, thyroid_dir=a.thyroid_dir),
        "execute every notebook through papermill")
    p.add_argument("--profile", default="smoke")
    p.add_argument("--data-dir", default=None, help="the IDC folder (default: the shipped real sample; the "
                   "whole Kaggle set with --profile full or colab); 'generated' for the generated demo set")
    p.add_argument("--thyroid-dir", default=None, help="real thyroid images (notebooks 16-17); "
                   "empty for the generated set")
    p.add_argument("--out", default=None, help="where executed notebooks go (outputs/notebooks)")
    p.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 00 01")
    p.add_argument("--kernel", default=None)

    p = command("html", _prints(_html, False), "render the notebooks the last run-all executed into a static site")
    p.add_argument("--notebooks", default=None, help="executed notebooks (default: outputs/notebooks)")
    p.add_argument("--out", default=None, help="where the pages go (default: outputs/html)")

    p = command("train", _prints(_train), "train a model on every patch of a folder split by patient (70/15/15): "
                "by default the recipe best, with --model's architecture", "budget")
    p.add_argument("--model", help="a name of helpers.models.MODELS (or give --recipe)")
    p.add_argument("--recipe", help="a recipe of helpers.recipes.recipe (original, best, original+tta, ...): "
                   "model(s) and model.json that evaluate applies as trained. Default: best. --set KEY=VALUE "
                   "overrides its options; --model and the flags below are short for some of them")
    p.add_argument("--out", required=True, help="folder for model.keras, model.json and the run")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--optimizer", help="optimizer: adam, adagrad, sgd, rmsprop or adadelta")
    p.add_argument("--lr", type=float, help="learning_rate (default: the recipe's)")
    p.add_argument("--weights", help="weights: imagenet, a weights file, or none (the default)")
    p.add_argument("--fine-tune-at", type=int, help="fine_tune_at: freeze the backbone's first N layers")
    p.add_argument("--split-dir", help="folder with cases_train.txt, cases_val.txt [, cases_test.txt]")
    p.add_argument("--image-size", type=int, help="image_size: input side (default: the model's own)")
    p.add_argument("--augment", help="augment: none, original, histology, ... (training batches only)")
    p.add_argument("--dropout", type=float, help="build dropout=: before the last Dense (default: the model's)")
    p.add_argument("--l2", type=float, help="build l2=: L2 penalty on the kernels (cancernet)")
    p.add_argument("--kernel-size", type=int, help="build kernel_size=: convolution kernel size (cancernet)")
    p.add_argument("--label-smoothing", type=float, help="label_smoothing, e.g. 0.1")
    p.add_argument("--recalibrate-bn", type=int, help="recalibrate_bn: training batches that refresh BatchNorm "
                   "statistics before each validation (0: off)")
    p.add_argument("--build", nargs="*", metavar="KEY=VALUE", help="build: more keywords of "
                   "models.build_model, e.g. downsample=stride 'filters=[[16],[32,32]]'")
    p.add_argument("--fit", nargs="*", metavar="KEY=VALUE", help="recipe options, as --set (train.fit's "
                   "keywords that are one: label_smoothing, monitor, patience, ...)")

    p = command("evaluate", _prints(_evaluate), "score every patch under a folder with a saved model")
    p.add_argument("--model-path", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--threshold", type=float, help="default: the one chosen on validation at training")

    p = command("crossval", _prints(_crossval), "patient-level k-fold cross-validation of a recipe: per-fold and "
                "mean ± sd F1, balanced accuracy and ROC-AUC (JSON on stdout, a table on stderr)", "budget")
    p.add_argument("--recipe", default="original",
                   help="original, best, or one plus ingredients: original+tta+ensemble")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--out", default=None, help="output folder (default: outputs/); folds go to "
                   "OUT/crossval/<recipe>-v<version>/..., finished ones are reused")
    p.add_argument("--verbose", type=int, default=2, help="Keras: 2 one line per epoch, 0 silent")
    p.add_argument("--keep-models", action="store_true", help="keep each fold's model files (~10 MB each), "
                   "so that decision-only options (threshold, TTA) can be re-scored without training")
    p.add_argument("--no-reuse", action="store_true", help="train even when a recipe trained the same way "
                   "(differing only in threshold rule or TTA) was cross-validated on these folds before")
    p.add_argument("--shares", type=float, nargs="+", metavar="SHARE", help="a learning curve: the recipe on "
                   "these shares of each fold's training split and on all of it, one table (--set "
                   "train_subset=patients: shares of the patients, not of each patient's patches)")
    p.add_argument("--without-lockbox", action="store_true", help="only the development patients: the "
                   "lockbox (~20%% of the patients, chosen by ID: helpers.recipes.selection) is left out, to be "
                   "scored once after every choice")
    p.add_argument("--lockbox", action="store_true", help="the final score, once every choice is made: train on "
                   "the development patients (validation among them) and test on the lockbox's patients")
    p.add_argument("--with-colour", action="store_true", help="also cross-validate the colour-statistics "
                   "baseline (helpers.recipes.colour: gradient-boosted trees, seconds of CPU) on the same folds, "
                   "and the average of it and the recipe")

    p = command("select", _prints(_select), "forward selection of ingredients on top of a recipe, by "
                "cross-validation on the development patients alone (the lockbox is never read): an ingredient "
                "joins when its paired difference's lower 95%% confidence bound over the seeds is above 0", "budget")
    p.add_argument("--base", default="careful", help="the recipe to add ingredients to")
    p.add_argument("--ingredients", nargs="+", required=True, help="names of helpers.recipes.recipe.INGREDIENTS")
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 43], help="at least two: a verdict needs them")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--metric", default="roc_auc", choices=["roc_auc", "f1", "balanced_accuracy"])
    p.add_argument("--out", default=None, help="output folder (default: outputs/); every run is stored and reused")
    p.add_argument("--verbose", type=int, default=0, help="Keras: 2 one line per epoch, 0 silent")

    p = command("bench", lambda a: _late("tools.bench.main")(a.data_dir, sample=a.sample, full_set=a.full),
                "images/s of the input pipelines; --full: the full-size set's table")
    p.add_argument("--full", action="store_true", help="the whole-set table on the full-size generated set "
                   "(made on first use, ~1.5 GB), or on --data-dir")
    p.add_argument("--data-dir", default=None, help="default: the shipped sample, data/idc-sample")
    p.add_argument("--sample", type=int, default=None, help="use at most this many patches")

    p = command("make-breakhis-demo", _prints(lambda a: _late("breakhis.generator.make_demo")(
        a.dir, n_patients=a.patients, images_per_patient=a.images, seed=a.seed, progress=True)),
        "write a generated BreakHis-like set (official layout)", "demo")
    p.add_argument("dir")
    p.add_argument("--patients", type=int, default=16)
    p.add_argument("--images", type=int, default=12, help="images per patient (40X, 100X, 200X, 400X in turn)")

    p = command("make-thyroid-demo", _prints(_make_thyroid_demo), "write a generated thyroid ultrasound set "
                "(cropped/uncropped, train/test, B_/M_ names)", "demo")
    p.add_argument("dir", nargs="?", help="target folder (default: data/demo/thyroid-<N>n)")
    p.add_argument("--profile", default="smoke", help="the set's size: smoke, cpu or full")
    p.add_argument("--nodules", type=int, help="number of nodules (overrides the profile)")
    p.add_argument("--images", type=int, help="images per nodule (overrides the profile)")

    command("index-thyroid", _prints(lambda a: _late("thyroid.index.build_index")(a.dir)[1].summary(
        examples=a.examples)), "index a thyroid ultrasound folder and print a JSON summary", "listing")

    p = command("pretrain-breakhis", _prints(_pretrain_breakhis), "pretrain a model on BreakHis (benign / "
                "malignant, split by patient) and save it for fine-tuning on IDC")
    p.add_argument("--data-dir", required=True, help="the BreakHis folder (official layout or flat)")
    p.add_argument("--model", required=True, help="a name of helpers.models.MODELS, e.g. cancernet")
    p.add_argument("--out", required=True, help="the .keras file to write (its scores go beside, .json)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--profile", default="smoke", help="defaults for what is not given")
    p.add_argument("--seed", type=int, default=42, help="the patient split's and the training's seed")
    p.add_argument("--mode", default="tiles", choices=("tiles", "resize"), help="how images become 50x50 inputs")
    p.add_argument("--tiles", type=int, default=4, help="tiles per image (mode tiles)")
    p.add_argument("--weights", default=None, help="start from: imagenet (backbones), or omit for none")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:  # user errors: one clear line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
