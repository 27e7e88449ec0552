"""Command-line interface: parses options and calls the Python API, nothing more.

Errors a user can cause are printed as one line (file or option, what is wrong, the fix)
with exit status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import signal
import sys
import time
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from . import cli_options as O
from .errors import HistosgeError, InputError
from .read.formats import IMAGE_SUFFIXES


def ray_option_value(args: list[str]) -> list[str]:
    """``--ray`` takes an optional address: ``--ray`` followed by nothing, by another option or by
    anything that is not an address (``host:port``, ``ray://host:port``, ``auto``, ``local``)
    becomes ``--ray=`` (no address: $RAY_ADDRESS, else a local instance). A value meant as an
    address but malformed (``'not a host:abc'``: a colon, no such file, no slide suffix) stays the
    address, to be refused as one rather than read as a slide."""
    from .cohort.on_ray import is_address, meant_as_address

    out = list(args)
    for i, a in enumerate(out):
        if a == "--":
            break
        if a == "--ray" and (i + 1 == len(out) or out[i + 1].startswith("-")
                             or not (is_address(out[i + 1]) or meant_as_address(out[i + 1]))):
            out[i] = "--ray="
    return out


#: What follows ``--plot`` is a path or another argument, not genes, when it ends like a file.
_FILE_ENDINGS = (".h5ad", ".zarr", ".histosge", *IMAGE_SUFFIXES, ".csv", ".txt", ".tsv", ".h5", ".json")


def plot_option_value(args: list[str]) -> list[str]:
    """``--plot`` takes an optional gene list: ``--plot`` followed by nothing, by another option or
    by anything that is not a gene list (a path, a dataset name, a file) becomes ``--plot=`` (the
    default genes); ``--plot ERBB2,GRB7`` and ``--plot=ERBB2`` name genes."""
    import os

    def genes_like(text: str) -> bool:
        return not (text.startswith("-") or "/" in text or os.sep in text or ":" in text
                    or text.lower().endswith(_FILE_ENDINGS) or os.path.exists(text))

    out = list(args)
    for i, a in enumerate(out):
        if a == "--":
            break
        if a == "--plot" and (i + 1 == len(out) or not genes_like(out[i + 1])):
            out[i] = "--plot="
    return out


class _Commands(TyperGroup):
    def parse_args(self, ctx, args):
        return super().parse_args(ctx, plot_option_value(ray_option_value(args)))


app = typer.Typer(cls=_Commands, add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  rich_markup_mode=None,  # click's plain help: wrapped to any width, never an option name cut
                  help="Predict high-resolution spatial gene expression from H&E histology (HisToSGE).")
err = Console(stderr=True)
out = Console()
_o = typer.Option


def _run(debug: bool, fn, *args, output: Path | None = None, interrupted: str | None = None, **kwargs):
    from ._atomic import stop_requested, was_committed

    try:
        result = fn(*args, **kwargs)
    except HistosgeError as e:
        if debug:
            raise
        from rich.markup import escape  # a message may hold brackets: pip install "histosge[ray]"

        err.print(f"[bold red]error:[/] {escape(e.message)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        if interrupted:
            err.print(f"interrupted: {interrupted}", highlight=False)
        elif output is not None and was_committed(output):
            err.print(f"interrupted after {output} was completely written (it is kept)", highlight=False)
        else:
            err.print("interrupted: no output was written; rerun the same command to resume (features are cached)")
        raise typer.Exit(130) from None
    if stop_requested():  # a library swallowed the KeyboardInterrupt of a SIGTERM
        err.print("interrupted: the run was asked to stop", highlight=False)
        raise typer.Exit(130)
    return result


def _summary(title: str, rows: list[tuple[str, str]]) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")  # paths and numbers wrap, never cut with an ellipsis
    for k, v in rows:
        table.add_row(k, v)
    out.print(table)


def _gene_names(genes: str | None) -> tuple[str, ...] | None:
    """--genes NAMES (a comma list or a file), checked before any work; duplicates kept once, said."""
    from .genes import parse_gene_names

    if genes is None:
        return None
    names, dups = parse_gene_names(genes, where="--genes")
    if dups:
        err.print(f"warning: --genes: {', '.join(dups)} listed more than once; kept once", highlight=False)
    return tuple(names)


def _plot_names(plot: str | None) -> list[str] | None:
    """--plot: None (no plot), [] (--plot alone: the default genes) or the genes named."""
    if plot is None:
        return None
    return [g.strip() for g in plot.split(",") if g.strip()]


def _reliability_row(summary: dict) -> tuple[str, str]:
    """The summary line on per-gene reliability (uns['histosge']['reliability'] of an output)."""
    from .model.reliability import RELIABLE_PCC

    if not summary.get("estimated"):
        return ("reliable genes", str(summary.get("why", "not estimated")))
    top = ", ".join(f"{g} {v:.2f}" for g, v in summary["top"].items())
    return ("reliable genes", f"{summary['n_reliable']} of {summary['n_genes']} (cv_pcc >= {RELIABLE_PCC:g}: the "
                              f"held-out Pearson estimated at training); top: {top}")


def _files(source, counts, spots, image) -> tuple[str, str, str] | None:
    """None for a SOURCE; (counts, spots, image) for a legacy-ST section given as three files."""
    if counts is None and spots is None:
        if source is None:
            raise InputError("no section given", where="SOURCE",
                             fix="give a section (a folder, an .h5ad, dataset:section) or a legacy-ST section's "
                                 "files as --counts FILE --spots FILE --image FILE")
        return None
    if source is not None:
        raise InputError(f"both a SOURCE ({source}) and --counts/--spots were given", where="--counts",
                         fix="give one section: SOURCE, or --counts FILE --spots FILE --image FILE")
    missing = [flag for flag, v in (("--counts", counts), ("--spots", spots), ("--image", image)) if v is None]
    if missing:
        raise InputError(f"{' and '.join(missing)} missing: a legacy-ST section is given as three files",
                         where=missing[0], fix="give --counts FILE (the count table) --spots FILE (the spot "
                                               "table: x, y, pixel_x, pixel_y, selected) --image FILE (the H&E)")
    from .read.resolve import check_source

    for v in (counts, spots, image):
        check_source(v)
    return str(counts), str(spots), str(image)


def _dropped_row(adata) -> list[tuple[str, str]]:
    """The summary row counting the spots the reader left out (selected = 0, off tissue, no counts)."""
    dropped = adata.uns.get("histosge", {}).get("dropped")
    if dropped is None:
        return []
    from .read.checks import dropped_text

    return [("dropped on reading", f"{dropped_text(dropped)} (kept {adata.n_obs} spots)")]


def _correction_row(info: dict, method: str) -> list[tuple[str, str]]:
    """Whether HisToSGE's correction network was used, and why not."""
    history = (info.get("model") or {}).get("history")
    mode = (info.get("model") or {}).get("mode") or info.get("mode")
    if history is None:
        return [("correction network", f"none (the {method} method has none)")]
    if mode == "paper" or method == "histosge-paper":
        return [("correction network", "none (paper mode: the network is the whole model, "
                                       f"{history.get('epochs_run', '?')} epochs)")]
    if "skipped" in history:
        return [("correction network", f"not used: {history['skipped']}")]
    if "initial_val_loss" in history and "best_epoch" not in history:
        return [("correction network", "not used: it never beat the measured neighbours' context on the validation "
                                       f"spots ({history.get('outcome', '')})")]
    return [("correction network", f"used: {history.get('outcome', 'trained')}")]


def _job(task: str, source: str | None, output: Path, image, data_dir, plot, progress, model: dict, extra,
         check_alignment: bool = True, storage: dict | None = None, counts=None, spots=None):
    import dataclasses

    from . import options
    from ._atomic import check_output, write_output

    t0 = time.perf_counter()
    model["genes"] = _gene_names(model["genes"])
    opts = options.ModelOptions(**model)  # the one options object, checked as the Python API checks it
    extra = options.validate(**extra)
    from .genes import GeneChoice

    GeneChoice(opts.genes or (), opts.n_top_genes, opts.all_genes)  # nothing to predict fails here
    _check_names(opts.method, opts.encoder)
    from .read import read_section
    from .read.resolve import check_source, input_paths, read_files

    files = _files(source, counts, spots, image)
    if files is None:
        inputs = input_paths(source, image=image, data_dir=data_dir)
    else:
        inputs = [Path(f).expanduser() for f in files]
        source = f"{Path(files[0]).name} + {Path(files[1]).name} + {Path(files[2]).name}"
    if opts.prior:
        inputs = [*inputs, Path(opts.prior)]
    output = check_output(output, inputs=inputs)  # the outputs first: a bad -o is refused before the input is read
    _check_cache(opts.cache_dir)
    png = output.with_name(output.stem + "_genes.png") if plot is not None else None
    if png is not None:
        check_output(png, inputs=inputs, suffixes=(".png",), option="--plot")
    if files is None:
        check_source(source, data_dir=data_dir)
    adata = (read_section(source, image=image, data_dir=data_dir, check_alignment=check_alignment) if files is None
             else read_files(*files, check_alignment=check_alignment))
    from .genes import check_named  # named genes the section lacks: refused before torch is imported

    check_named(opts.genes or (), adata.var_names, what=f"{source}")
    if plot:  # genes to draw are genes to predict: named, so they are predicted whatever their variance
        check_named(plot, adata.var_names, where="--plot", what=f"{source}")
        opts = dataclasses.replace(opts, genes=tuple(dict.fromkeys([*(opts.genes or ()), *plot])))
    from . import tasks  # heavy (torch, scanpy): only once every check that needs no work has passed

    fn = tasks.superres if task == "superres" else tasks.recover
    result = fn(adata, image=image, progress=progress, options=opts, **extra)
    drawn = []
    if png:
        from . import plot as plot_mod

        drawn = plot_mod.gene_maps(result, png, genes=plot or None)
    try:
        write_output(result, output, **(storage or {}))  # published last: an interrupt before this leaves no output
    except BaseException:
        if png is not None:
            png.unlink(missing_ok=True)
        raise
    info = result.uns["histosge"]
    g = info["gene_choice"]
    named = f" + {len(g['named'])} named" if g.get("named") else ""
    chosen = "all detected in >= 1% of the training spots" if g.get("all_genes") else \
        f"{g['n_top_genes']} HVGs ({info['hvg_flavour']})"
    rows = [("section", f"{source} ({adata.n_obs} spots x {adata.n_vars} genes)"),
            ("genes predicted", f"{result.n_vars}: {chosen}{named}"),
            _reliability_row(info["reliability"]),
            ("encoder", str(info["settings"]["encoder"] or "none (the method reads no image)")),
            ("method", opts.method)]
    rows += _dropped_row(adata) + _correction_row(info, opts.method)
    if "prior" in info.get("model", {}):
        p = info["model"]["prior"]
        rows.append(("prior", f"{opts.prior} (sha256 {p['sha256'][:16]}...; predicts {p['genes_covered']} of "
                              f"{p['genes']} genes; weight in the final prediction {p.get('stack_weight', 0):g})"))
    if task == "superres":
        rows.append(("spots", f"{info['n_measured']} measured + {info['n_generated']} generated "
                              f"= {result.n_obs} ({result.n_obs / info['n_measured']:.2f}x)"))
    else:
        m = info["metrics"]
        rows += [("split", f"{info['n_train']} train / {info['n_test']} held out"),
                 ("held-out score", f"pcc {m['pcc']:.3f}, pcc_top50 {m['pcc_top50']:.3f}, "
                                    f"mse {m['mse']:.4f}, mae {m['mae']:.4f}")]
    align = adata.uns.get("histosge", {}).get("alignment", {})
    if "status" in align:
        score = f" (edge AUC {align['edge_auc']:.3f})" if "edge_auc" in align else ""
        rows.append(("alignment", f"{align['status']}{score}"))
    rows += [("time", f"{time.perf_counter() - t0:.1f} s (features {info['seconds']['features']:.1f} s, "
                      f"model {info['seconds']['fit_predict']:.1f} s)"),
             ("output", str(output))]
    if png:
        rows.append(("plot", f"{png} ({', '.join(drawn)})"))
    _summary(f"histosge {task}", rows)


def _check_names(method: str | None, encoder: str | None) -> None:
    """An unknown --method or --encoder fails at once: the registries are read without importing a
    method's or an encoder's code (nor torch)."""
    if method is not None:
        from .methods import get_spec

        get_spec(method)
    if encoder is not None:
        from .encode import get_spec as encoder_spec

        try:
            encoder_spec(encoder)
        except HistosgeError as e:
            raise InputError(e.what, where="--encoder", fix=e.fix) from None


def _check_cache(cache_dir) -> None:
    """An explicit --cache-dir that cannot be used fails before any work (a default one that
    cannot be written only warns, later, and the run goes on without a cache)."""
    if cache_dir is not None:
        from .encode.cache import check_cache_dir

        check_cache_dir(cache_dir)


@app.command()
@O.with_options(O.section_input, O.model_options, O.output_options, O.run_options)
def superres(source: O.Source = None, output: O.Output = ..., factor: O.Factor = 4, method: O.Method = "histosge",
             **opts):
    """Predict expression at 4x (or 9x, 16x) denser spots placed between the measured ones."""
    _section_command("superres", source, output, {"factor": factor}, method, opts)


@app.command()
@O.with_options(O.section_input, O.model_options, O.output_options, O.run_options)
def recover(source: O.Source = None, output: O.Output = ..., holdout: O.Holdout = 0.5, method: O.Method = "histosge",
            **opts):
    """Hold out spots, predict them, and score against their measured values (held-out only)."""
    _section_command("recover", source, output, {"holdout": holdout}, method, opts)


def _section_command(task: str, source, output: Path, extra: dict, method: str, opts: dict) -> None:
    model = {"method": method, **{k: opts[k] for k in O.MODEL_OPTIONS}}
    _run(opts["debug"], _job, task, source, output, opts["image"], opts["data_dir"], _plot_names(opts["plot"]),
         not opts["quiet"], model, extra, check_alignment=opts["alignment_check"], output=output,
         storage={"features": opts["keep_features"], "lossless": opts["lossless"]}, counts=opts["counts"],
         spots=opts["spots"])


@app.command()
@O.with_options(O.section_input, O.model_options, O.run_options)
def train(sources: O.Sources = None, output: O.ModelOutput = ..., method: O.TrainMethod = "histosge",
          mode: O.Mode = None, **opts):
    """Fit a model on measured sections and save it to one file (share it; predict with it later).
    Any method of `histosge methods` that runs on one section (--method; default histosge). A
    neighbours-mode histosge model can read a --prior (an image-mode model of other sections); the
    file then holds the prior too."""

    image, counts, spots, data_dir = opts["image"], opts["counts"], opts["spots"], opts["data_dir"]
    alignment_check, quiet = opts["alignment_check"], opts["quiet"]

    def job():
        from ._atomic import check_output, stop_requested
        from .model.reliability import summary
        from .options import MODES, ModelOptions
        from .read import read_section
        from .read.resolve import check_source, input_paths

        t0 = time.perf_counter()
        if mode is not None and mode not in MODES:
            raise InputError(f"unknown mode {mode!r}", where="--mode", fix=f"use one of {', '.join(MODES)}")
        named = _gene_names(opts["genes"])
        model_opts = ModelOptions(method=method, **{k: opts[k] for k in O.MODEL_OPTIONS if k != "genes"}, genes=named)
        _check_names(method, model_opts.encoder)
        from .genes import GeneChoice, check_named

        GeneChoice(named or (), model_opts.n_top_genes, model_opts.all_genes)  # nothing to predict fails here
        if image is not None and counts is None and spots is None:
            raise InputError("--image goes with --counts and --spots (a legacy-ST section as three files)",
                             where="--image", fix="give --counts FILE --spots FILE --image FILE, or drop --image")
        files = _files(None, counts, spots, image) if (counts or spots) else None
        if not sources and files is None:
            _files(None, None, None, None)  # the 'no section given' error
        names = list(sources or [])
        prior = model_opts.prior
        inputs = [p for s in names for p in input_paths(s, data_dir=data_dir)] + ([Path(prior)] if prior else [])
        inputs += [Path(f).expanduser() for f in files or ()]
        path = check_output(output, inputs=inputs, suffixes=(".histosge",))
        for s in names:
            check_source(s, data_dir=data_dir)
        _check_cache(model_opts.cache_dir)
        from .read.resolve import read_files

        sections = [read_section(s, data_dir=data_dir, check_alignment=alignment_check) for s in names]
        if files is not None:
            sections.append(read_files(*files, check_alignment=alignment_check))
            names.append(Path(files[0]).name)
        for s, a in zip(names, sections, strict=True):  # a named gene a section lacks: refused before torch
            check_named(named or (), a.var_names, what=s)
        from . import tasks  # heavy (torch): after every check that needs no work

        params = {"mode": mode, **model_opts.model_params()}
        model = tasks.train(sections, method=method, progress=not quiet, cache_dir=model_opts.cache_dir,
                            batch_size=model_opts.batch_size, **params)
        if stop_requested():
            raise KeyboardInterrupt
        sha = model.save(path)
        sc = model.scores_
        score = (f"pcc {sc['pcc']:.3f}, pcc_top50 {sc['pcc_top50']:.3f}, mse {sc['mse']:.4f} ({sc['scope']})"
                 if "pcc" in sc else sc.get("scope", "-"))
        enc = model.encoder_
        choice = model.gene_choice()
        named = f" + {len(choice.named)} named" if choice.named else ""
        chosen = "all detected in >= 1% of the training spots" if choice.all_genes else \
            f"{choice.n_top} HVGs ({model.training_['hvg_flavour']})"
        _summary("histosge train", [
            ("sections", ", ".join(f"{s} ({a.n_obs} spots)" for s, a in zip(names, sections, strict=True))),
            *[("dropped on reading", f"{s}: {row[1]}") for s, a in zip(names, sections, strict=True)
              for row in _dropped_row(a)],
            ("method", f"{method} ({model.mode} mode)"),
            ("genes", f"{len(model.genes_)}: {chosen}{named}"),
            _reliability_row(summary(model)),
            ("encoder", f"{enc['encoder']} ({enc['weights_id']})" if enc.get("encoder") else
             "none (the method reads no image)"),
            ("patch", f"{model.patch_um_:g} um ({model.patch_scale:g} spot diameters of "
                      f"{model.spot_diameter_um_:g} um)"),
            ("training score", score),
            *_correction_row({"model": {"history": getattr(getattr(model, "network_", None), "history", None),
                                        "mode": model.mode}}, method),
            ("time", f"{time.perf_counter() - t0:.1f} s"),
            ("model", f"{path} (sha256 {sha[:16]}...)"),
        ])

    _run(opts["debug"], job, output=output)


def _check_model_genes(known: list[str], genes: list[str], where: str) -> None:
    """Genes the model must predict (--plot; ``known``: the model's): the missing ones, with close
    names, in one line."""
    from .genes import check_named

    try:
        check_named(genes, known, where=where, what=f"the model's {len(known)} genes")
    except InputError as e:
        raise InputError(e.what, where=where, fix="plot genes the model predicts (`histosge genes MODEL` lists them), "
                                                  "or train a model that names them: histosge train ... --genes "
                                                  + ",".join(genes)) from None


@app.command()
def predict(
    model_path: O.ModelInput,
    sources: O.PredictSources,
    output: O.OptionalOutput = None,
    out_dir: O.OutDir = None,
    mpp: O.Mpp = None,
    factor: O.PredictFactor = None,
    pitch_um: O.PitchUm = None,
    plot: O.PlotGenes = None,
    image: O.Image = None,
    data_dir: O.DataDir = None,
    batch_size: O.BatchSize = 64,
    device: O.Device = None,
    cache_dir: O.CacheDir = None,
    alignment_check: O.AlignmentCheck = True,
    keep_features: O.KeepFeatures = False,
    lossless: O.Lossless = False,
    ray: O.Ray = None,
    workers: O.Workers = None,
    gpus_per_worker: O.GpusPerWorker = 0.0,
    cpus_per_worker: O.CpusPerWorker = 1.0,
    retries: O.Retries = 1,
    quiet: O.Quiet = False,
    debug: O.Debug = False,
):
    """Predict expression with a saved model: on an H&E slide (virtual spots on its tissue) or a section
    (-o OUT), or on a cohort of slides (--out-dir OUT, optionally --ray)."""
    storage = {"features": keep_features, "lossless": lossless}
    if out_dir is not None:
        _run(debug, _cohort, model_path, sources, out_dir, output=None, mpp=mpp, factor=factor, pitch_um=pitch_um,
             extra={"--plot": plot is not None, "--image": image, "-o": output}, batch_size=batch_size,
             device=device, cache_dir=cache_dir, storage=storage, ray=ray, workers=workers,
             gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker, retries=retries, quiet=quiet,
             interrupted=f"slides finished so far are kept in {out_dir} (manifest.csv); rerun the same command to "
                         "do the rest")
        return
    if output is None or len(sources) != 1 or ray is not None:
        def refuse():
            if output is None:
                raise InputError("no output given", where="histosge predict",
                                 fix="give -o OUT.h5ad for one input, or --out-dir OUT for many slides")
            if ray is not None:
                raise InputError("--ray runs a cohort", where="--ray", fix="give --out-dir OUT instead of -o")
            raise InputError(f"-o writes one output, but {len(sources)} inputs were given", where="-o",
                             fix="give one input, or --out-dir OUT to predict them all")

        _run(debug, refuse)
        return
    source = sources[0]

    def job():
        from . import options
        from ._atomic import check_output, write_output
        from .read import read_section
        from .read.resolve import check_source, input_paths, is_slide
        from .read.slide import check_mpp

        t0 = time.perf_counter()
        opts = options.validate(batch_size=batch_size, device=device)
        if factor is not None:
            options.check("factor", factor)
        if mpp is not None:
            check_mpp(mpp, where="--mpp")
        if pitch_um is not None and not pitch_um > 0:
            raise InputError(f"spot pitch {pitch_um:g} um is not positive", where="--pitch-um",
                             fix="e.g. --pitch-um 100")
        slide = is_slide(source)
        if not slide:
            check_source(source, data_dir=data_dir)
        section_inputs = [Path(source)] if slide else input_paths(source, image=image, data_dir=data_dir)
        inputs = [Path(model_path), *section_inputs]
        path = check_output(output, inputs=inputs)
        _check_cache(cache_dir)
        genes = _plot_names(plot)
        png = path.with_name(path.stem + "_genes.png") if genes is not None else None
        if png is not None:
            check_output(png, inputs=inputs, suffixes=(".png",), option="--plot")
        if genes:  # read from the file's description: no torch before this check
            from .model.persist import read_description

            _check_model_genes(list(read_description(model_path).get("genes", [])), genes, "--plot")
        from . import tasks
        from .methods import load_model

        model = load_model(model_path, device=opts["device"])
        target = source if slide else read_section(source, image=image, data_dir=data_dir,
                                                   check_alignment=alignment_check)
        result = tasks.predict(model, target, mpp=mpp, factor=factor, pitch_um=pitch_um, cache_dir=cache_dir,
                               batch_size=opts["batch_size"], progress=not quiet)
        if not slide:
            result.uns["histosge"]["source"] = str(source)
        drawn = []
        if png is not None:
            from . import plot as plot_mod

            drawn = plot_mod.gene_maps(result, png, genes=genes or None, measured=None if slide else target)
        try:
            write_output(result, path, **storage)
        except BaseException:
            if png is not None:
                png.unlink(missing_ok=True)
            raise
        info = result.uns["histosge"]
        kind = f"H&E slide, {info['units']['mpp']:g} um/px" if slide else "section"
        rows = [("model", f"{model_path} ({getattr(model, 'method', 'histosge')}, {model.mode} mode, "
                          f"{len(model.genes_)} genes)"),
                _reliability_row(info["reliability"]),
                ("input", f"{source} ({kind})")]
        if slide:
            rows.append(("spots", f"{result.n_obs} virtual spots on tissue, hexagonal, {info['pitch_um']:g} um apart"))
        else:
            rows.append(("spots", f"{info['n_measured']} measured + {info['n_generated']} generated"))
        if "novel" in result.obs:  # HisToSGE scores how far each spot's image lies from the training images
            novel = int(result.obs["novel"].sum())
            rows.append(("novelty", f"{novel} spots ({novel / max(result.n_obs, 1):.1%}) look unlike the training "
                                    "images (obs['novel'])"))
        rows += [("time", f"{time.perf_counter() - t0:.1f} s"), ("output", str(path))]
        if png is not None:
            rows.append(("plot", f"{png} ({', '.join(drawn)})"))
        _summary("histosge predict", rows)

    _run(debug, job, output=output)


def _cohort(model_path, sources, out_dir, *, mpp, factor, pitch_um, extra, batch_size, device, cache_dir, storage,
            ray, workers, gpus_per_worker, cpus_per_worker, retries, quiet):
    from . import options
    from .cohort import predict_cohort

    for flag, value in extra.items():
        if value:
            raise InputError(f"{flag} does not go with --out-dir", where=flag,
                             fix="drop it (a cohort predicts slides, one output each), or predict one input with -o")
    t0 = time.perf_counter()
    opts = options.validate(batch_size=batch_size, device=device)
    res = predict_cohort(model_path, sources, out_dir, mpp=mpp, factor=factor, pitch_um=pitch_um,
                         cache_dir=cache_dir, batch_size=opts["batch_size"], device=opts["device"],
                         ray=None if ray is None else (ray or True), workers=workers,
                         gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker, retries=retries,
                         progress=not quiet, **storage)
    counts = ", ".join(f"{res.count(k)} {k}" for k in ("computed", "skipped", "reused", "failed") if res.count(k))
    spots = sum(int(r.get("spots") or 0) for r in res.records.values() if r.get("status") == "done")
    size = sum(int(r.get("output_bytes") or 0) for r in res.records.values() if r.get("status") == "done")
    backend = "here, one slide at a time"
    if res.backend == "ray":
        workers = res.timings.get("workers")
        backend = f"Ray, {workers} workers" if workers else "Ray (not started: nothing to do)"
    rows = [("model", str(model_path)), ("slides", f"{len(res.slides)} ({counts})"), ("run", backend),
            ("spots", f"{spots} in {len(res.slides) - len(res.failed)} outputs ({size / 1e6:.1f} MB)"),
            ("time", f"{time.perf_counter() - t0:.1f} s"), ("outputs", str(res.out_dir)),
            ("manifest", str(res.manifest))]
    for name in res.failed[:5]:
        rows.append((f"failed: {name}", str(res.records[name].get("error", ""))))
    if len(res.failed) > 5:
        rows.append(("failed", f"... and {len(res.failed) - 5} more (manifest.csv)"))
    _summary("histosge predict (cohort)", rows)
    if res.failed:
        err.print(f"{len(res.failed)} of {len(res.slides)} slides failed (status 'failed' in {res.manifest}); "
                  "fix them and rerun the same command to retry only those", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@app.command()
def genes(
    model_path: O.ModelInput,
    top: int = _o(50, "--top", help="Genes listed (the most reliable first)."),
    all_: bool = _o(False, "--all", help="List every gene."),
    as_json: bool = _o(False, "--json", help="Print every gene as JSON (gene, cv_pcc, fold mean, reliable, named)."),
    debug: O.Debug = False,
):
    """List a model's genes ranked by cv_pcc: the Pearson each gene's prediction is expected to have
    at spots the model never saw, and whether it counts as reliable."""

    def show():
        import json

        from .model.persist import read_description
        from .model.reliability import RELIABLE_PCC, RULE

        if top < 1:
            raise InputError(f"must be a whole number >= 1, got {top}", where="--top", fix="e.g. --top 50")
        meta = read_description(model_path)  # the JSON description alone: no arrays, no torch
        names = [str(g) for g in meta.get("genes", [])]
        named = set((meta.get("hyperparameters") or {}).get("genes") or [])
        rel = meta.get("reliability") or {}
        if "cv_pcc" in rel and len(rel["cv_pcc"]) == len(names):
            sparse = set(rel.get("sparse", []))
            rows = [{"gene": g, "cv_pcc": rel["cv_pcc"][i], "fold_mean_pcc": rel["raw_pcc"][i],
                     "reliable": bool(rel["cv_pcc"][i] >= RELIABLE_PCC and i not in sparse),
                     "named": g in named, "too_sparse": i in sparse} for i, g in enumerate(names)]
            rows.sort(key=lambda r: -r["cv_pcc"])
            why = None
        else:
            rows = [{"gene": g, "cv_pcc": None, "fold_mean_pcc": None, "reliable": False, "named": g in named,
                     "too_sparse": False} for g in names]
            why = rel.get("why") or (f"not estimated: the model file predates per-gene reliability (schema "
                                     f"{meta.get('schema_version')}); re-train it with this histosge to get cv_pcc")
        if as_json:
            print(json.dumps({"model": str(model_path), "rule": rel.get("rule", RULE), "scope": rel.get("scope"),
                              "note": why, "genes": rows}, indent=1))
            return
        n_rel = sum(r["reliable"] for r in rows)
        if why:
            out.print(f"{model_path}: {len(rows)} genes; {why}", markup=False, highlight=False, soft_wrap=True)
        else:
            out.print(f"{model_path}: {len(rows)} genes, {n_rel} reliable ({rel.get('rule', RULE)}); cv_pcc: "
                      f"{rel.get('scope', '')}, shrunk toward genes of the same predicted spread", markup=False,
                      highlight=False, soft_wrap=True)
        shown = rows if all_ else rows[:top]
        table = Table(show_header=True)
        for col in ("rank", "gene", "cv_pcc", "fold mean", "reliable", "named"):
            table.add_column(col)
        def fmt(v):
            return "-" if v is None else f"{v:.3f}"

        for i, r in enumerate(shown, 1):
            table.add_row(str(i), r["gene"], fmt(r["cv_pcc"]), fmt(r["fold_mean_pcc"]),
                          "yes" if r["reliable"] else ("no (too few spots)" if r["too_sparse"] else "no"),
                          "yes" if r["named"] else "")
        out.print(table)
        if len(shown) < len(rows):
            out.print(f"... {len(rows) - len(shown)} more (--all lists every gene, --json prints them as JSON)",
                      markup=False, highlight=False)

    _run(debug, show)


@app.command()
def encoders(debug: O.Debug = False):
    """List image encoders: name, output dim, input size, licence, and whether each can run now."""
    from .encode import DEFAULT_ENCODER, list_encoders

    def show():
        from rich.markup import escape

        rows = list_encoders()
        table = Table(title="image encoders")
        for col in ("name", "dim", "input", "licence", "available"):
            table.add_column(col)
        for e in rows:
            name = e["name"] + (" (default)" if e["name"] == DEFAULT_ENCODER else "")
            table.add_row(escape(name), str(e["dim"]), str(e["input_size"]), escape(str(e.get("licence", ""))),
                          "yes" if e["available"] else "no (see below)")
        out.print(table)
        # Fixes hold URLs and install commands: printed whole (never cut to the terminal's width),
        # and as plain text (rich markup would swallow extras such as [phikon]).
        missing = [e for e in rows if not e["available"]]
        if missing:
            out.print("To make an encoder available:", markup=False, highlight=False)
        for e in missing:
            out.print(f"  {e['name']}: {e.get('reason', '')}", markup=False, highlight=False, soft_wrap=True)

    _run(debug, show)


@app.command("methods")
def methods_(debug: O.Debug = False):
    """List methods: name, what each needs, whether --quick shortens it, and whether the default
    benchmark runs it (what --method and --methods take)."""

    def show():
        from rich.markup import escape

        from .methods import specs  # the registrations only: no method class (nor torch) is imported

        def _predicts(spec) -> str:
            """What its saved model predicts (the mode of the model ``create_model`` makes)."""
            if spec.needs_other_sections:
                return "bench R+/G+"
            mode = spec.mode
            text = "any H&E" if mode == "image" else "a section"
            return text + ("; any H&E with --mode image" if spec.cross_section else "")

        table = Table(title="methods")
        for col in ("name", "reads", "predicts", "--quick", "bench"):
            table.add_column(col)
        for s in specs():
            reads = "+".join(w for w, on in (("image", s.reads_image), ("grid", s.reads_positions),
                                             ("measured", s.needs_target_expression),
                                             ("cohort", s.needs_other_sections)) if on) or "-"
            where = _predicts(s)
            table.add_row(escape(s.name), reads, where, f"{s.quick_epochs} ep" if s.quick_epochs else "-",
                          "default" if s.default else "--methods")
        out.print(table)
        out.print("reads: image features, grid positions, the measured spots of the section it predicts, the other "
                  "sections of the dataset. predicts: any H&E (a section or a slide: histosge train, then "
                  "predict), a measured section (superres, recover, predict SECTION), or only inside histosge "
                  "bench. Every method but the bench-only ones runs in superres, recover and train.",
                  markup=False, highlight=False, soft_wrap=True)
        for s in specs():
            out.print(f"  {s.name}: {s.description}", markup=False, highlight=False, soft_wrap=True)

    _run(debug, show)


@app.command()
def bench(
    data: str | None = _o(None, "--data", envvar="HISTOSGE_DATA", show_envvar=False, show_default=False,
                   help="Folder laid out like ../shared/data (dlpfc/<id>/, her2st/); default $HISTOSGE_DATA."),
    out_dir: Path = _o(Path("histosge-bench"), "--out",
                       help="Output folder: run.json, results.jsonl (a record per fit), predictions/, report.md."),
    sections: str = _o(None, "--sections", help="e.g. dlpfc:151673,her2st:C2 (default: all found)."),
    protocols: str = _o("R,G,X", "--protocols",
                        help="R (recovery), G (4x generation), X (cross-section); also G9, G16 (9x, 16x), and "
                             "R+, G+ (R and G with the other sections of the dataset: a prior for histosge, pooled "
                             "spots for ridge and stnet)."),
    methods: str = _o(None, "--methods", help="Comma-separated methods (default: the standard set). All: "
                      "mean, knn, ridge, stnet, histogene, stage, thitogene, deepspace, histosge, histosge-paper, "
                      "ridge+pooled, stnet+pooled, histosge+prior."),
    seeds: str = _o("0", "--seeds", help="Comma-separated seeds."),
    encoder: O.Encoder = None,
    genes: O.Genes = None,
    n_top_genes: O.NTopGenes = 1000,
    all_genes: O.AllGenes = False,
    cache_dir: O.CacheDir = None,
    quick: bool = _o(False, "--quick", help="One section, few epochs: a smoke test in under 2 minutes."),
    domains: str = _o("kmeans", "--domains", help="Spatial-domain clusterers: kmeans, leiden (scanpy, needs "
                      'igraph), stagate and stmask (need pip install "histosge[domains]"; minutes per DLPFC '
                      'clustering on a CPU: docs/BENCHMARK.md).'),
    resume: bool = _o(False, "--resume", help="Go on with an interrupted run in --out (same options): finished "
                      "tasks are kept, the rest fitted."),
    debug: O.Debug = False,
):
    """Score every method on held-out spots under protocols R, G and X; write results.jsonl + report.md."""
    from . import benchmark

    def split(text):
        return [x.strip() for x in text.split(",") if x.strip()] if text else None

    def job():
        if not data:
            raise InputError("no data folder given", where="--data",
                             fix="give --data the folder holding dlpfc/ and her2st/, or set HISTOSGE_DATA")
        try:
            seed_list = [int(s) for s in split(seeds) or [0]]
        except ValueError:
            raise InputError(f"seeds must be integers, got {seeds!r}", where="--seeds",
                             fix="e.g. --seeds 0,1,2") from None
        _check_cache(cache_dir)
        from .genes import GeneChoice
        from .options import check

        named = _gene_names(genes)
        choice = GeneChoice(named or (), check("n_top_genes", n_top_genes), all_genes)
        n_genes = choice.n_top if not (named or all_genes) else choice  # the default: a number, as before
        options = {"sections": split(sections), "protocols": split(protocols), "methods": split(methods),
                   "encoder": encoder, "domains": split(domains), "cache_dir": cache_dir, "n_genes": n_genes}
        result = benchmark.run(data, out_dir, seeds=seed_list, quick=quick, resume=resume,
                               **{k: v for k, v in options.items() if v is not None})
        _summary("histosge bench", [("records", str(len(result.records))),
                                    ("results", str(Path(out_dir) / "results.jsonl")),
                                    ("report", str(Path(out_dir) / "report.md"))])

    _run(debug, job)


def _terminate(signum, frame):  # kill: unwind like Ctrl-C so temporary files are removed
    from ._atomic import request_stop

    request_stop()  # remembered, in case a library catches and drops the KeyboardInterrupt
    raise KeyboardInterrupt


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """histosge's own warnings (input repaired, a named gene too sparse to learn) as one line each;
    other libraries' warnings as Python shows them."""
    if category.__name__ == "InputWarning":
        err.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def main() -> None:
    warnings.showwarning = _show_warning
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - outside a command
        sys.exit(130)


if __name__ == "__main__":
    main()
