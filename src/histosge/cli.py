"""Command-line interface: parses options and calls the Python API, nothing more.

Errors a user can cause are printed as one line (file or option, what is wrong, the fix)
with exit status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from .errors import HistosgeError, InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Predict high-resolution spatial gene expression from H&E histology (HisToSGE).")
err = Console(stderr=True)
out = Console()

SOURCE_HELP = ("A Space Ranger folder, an .h5ad file, or a dataset name such as her2st:C2 or dlpfc:151673 "
               "resolved in --data-dir (default: $HISTOSGE_DATA).")


def _run(debug: bool, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except HistosgeError as e:
        if debug:
            raise
        err.print(f"[bold red]error:[/] {e.message}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err.print("interrupted: no output was written; rerun the same command to resume (features are cached)")
        raise typer.Exit(130) from None


def _common_options(encoder, weights, patch_scale, genes, method, epochs, group_size, patience, seed, device,
                    cache_dir) -> dict:
    return dict(encoder=encoder, weights=weights, patch_scale=patch_scale, n_genes=genes, method=method,
                epochs=epochs, group_size=group_size, patience=patience, seed=seed, device=device,
                cache_dir=cache_dir)


def _summary(title: str, rows: list[tuple[str, str]]) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    for k, v in rows:
        table.add_row(k, v)
    out.print(table)


def _job(task: str, source: str, output: Path, image, data_dir, plot, markers, progress, opts, extra):
    from . import plot as plot_mod
    from . import tasks
    from ._atomic import check_writable, write_h5ad
    from .read import read_section

    t0 = time.perf_counter()
    check_writable(output)
    png = output.with_name(output.stem + "_markers.png") if plot else None
    adata = read_section(source, image=image, data_dir=data_dir)
    fn = tasks.superres if task == "superres" else tasks.recover
    result = fn(adata, image=image, progress=progress, **opts, **extra)
    write_h5ad(result, output)
    drawn = plot_mod.markers(result, png, genes=markers) if png else []
    info = result.uns["histosge"]
    rows = [("section", f"{source} ({adata.n_obs} spots x {adata.n_vars} genes)"),
            ("genes predicted", f"{result.n_vars} HVGs ({info['hvg_flavour']})"),
            ("encoder", str(info["settings"]["encoder"])), ("method", opts["method"])]
    if task == "superres":
        rows.append(("spots", f"{info['n_measured']} measured + {info['n_generated']} generated "
                              f"= {result.n_obs} ({result.n_obs / info['n_measured']:.2f}x)"))
    else:
        m = info["metrics"]
        rows += [("split", f"{info['n_train']} train / {info['n_test']} held out"),
                 ("held-out score", f"pcc {m['pcc']:.3f}, pcc_top50 {m['pcc_top50']:.3f}, "
                                    f"mse {m['mse']:.4f}, mae {m['mae']:.4f}")]
    rows += [("time", f"{time.perf_counter() - t0:.1f} s (features {info['seconds']['features']:.1f} s, "
                      f"model {info['seconds']['fit_predict']:.1f} s)"),
             ("output", str(output))]
    if png:
        rows.append(("plot", f"{png} ({', '.join(drawn)})"))
    _summary(f"histosge {task}", rows)


_o = typer.Option


@app.command()
def superres(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    output: Path = _o(..., "-o", "--output", help="Output .h5ad (written atomically)."),
    factor: int = _o(4, "--factor", help="Spot density relative to the measured grid: 4 (midpoints), 9 or 16."),
    image: str = _o(None, "--image", help="Full-resolution H&E image (TIFF/JPEG/PNG); takes precedence."),
    data_dir: str = _o(None, "--data-dir", help="Folder that dataset names resolve in (default $HISTOSGE_DATA)."),
    encoder: str = _o(None, "--encoder", help="Image encoder (see `histosge encoders`)."),
    weights: str = _o(None, "--weights", help="Local weights file or folder for the encoder."),
    patch_scale: float = _o(2.0, "--patch-scale", help="Patch side as a multiple of the spot diameter."),
    genes: int = _o(1000, "--genes", help="Number of highly variable genes to predict."),
    method: str = _o("histosge", "--method", help="histosge (default) or histosge-paper."),
    epochs: int = _o(None, "--epochs", help="Maximum epochs (default 300 with early stopping; paper 1000)."),
    group_size: int = _o(None, "--group-size", help="Spots per attention group (default 50)."),
    patience: int = _o(None, "--patience", help="Early-stopping patience in epochs."),
    seed: int = _o(0, "--seed"),
    device: str = _o(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)."),
    cache_dir: str = _o(None, "--cache-dir", help="Feature cache (default ~/.cache/histosge or $HISTOSGE_CACHE)."),
    plot: bool = _o(False, "--plot", help="Also write <output>_markers.png: marker genes measured vs generated."),
    markers: str = _o(None, "--markers", help="Comma-separated genes for --plot (default: known markers)."),
    quiet: bool = _o(False, "--quiet", help="No progress bars."),
    debug: bool = _o(False, "--debug", help="Show tracebacks."),
):
    """Predict expression at 4x (or 9x, 16x) denser spots placed between the measured ones."""
    opts = _common_options(encoder, weights, patch_scale, genes, method, epochs, group_size, patience, seed,
                           device, cache_dir)
    _run(debug, _job, "superres", source, output, image, data_dir, plot,
         markers.split(",") if markers else None, not quiet, opts, {"factor": factor})


@app.command()
def recover(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    output: Path = _o(..., "-o", "--output", help="Output .h5ad (written atomically)."),
    holdout: float = _o(0.5, "--holdout", help="Fraction of spots held out and scored."),
    image: str = _o(None, "--image", help="Full-resolution H&E image (TIFF/JPEG/PNG); takes precedence."),
    data_dir: str = _o(None, "--data-dir", help="Folder that dataset names resolve in (default $HISTOSGE_DATA)."),
    encoder: str = _o(None, "--encoder", help="Image encoder (see `histosge encoders`)."),
    weights: str = _o(None, "--weights", help="Local weights file or folder for the encoder."),
    patch_scale: float = _o(2.0, "--patch-scale", help="Patch side as a multiple of the spot diameter."),
    genes: int = _o(1000, "--genes", help="Number of highly variable genes to predict."),
    method: str = _o("histosge", "--method", help="histosge (default) or histosge-paper."),
    epochs: int = _o(None, "--epochs"),
    group_size: int = _o(None, "--group-size"),
    patience: int = _o(None, "--patience"),
    seed: int = _o(0, "--seed", help="Seeds the held-out split and the model."),
    device: str = _o(None, "--device"),
    cache_dir: str = _o(None, "--cache-dir"),
    plot: bool = _o(False, "--plot", help="Also write <output>_markers.png: held-out measured vs predicted."),
    markers: str = _o(None, "--markers"),
    quiet: bool = _o(False, "--quiet"),
    debug: bool = _o(False, "--debug"),
):
    """Hold out spots, predict them, and score against their measured values (held-out only)."""
    opts = _common_options(encoder, weights, patch_scale, genes, method, epochs, group_size, patience, seed,
                           device, cache_dir)
    _run(debug, _job, "recover", source, output, image, data_dir, plot,
         markers.split(",") if markers else None, not quiet, opts, {"holdout": holdout})


@app.command()
def encoders(debug: bool = _o(False, "--debug")):
    """List image encoders: name, output dim, input size, licence, and whether each can run now."""
    from .encode import DEFAULT_ENCODER, list_encoders

    def show():
        table = Table(title="image encoders")
        for col in ("name", "dim", "input", "licence", "available"):
            table.add_column(col)
        for e in list_encoders():
            mark = "yes" if e["available"] else f"no: {e.get('reason', '')}"
            name = e["name"] + (" (default)" if e["name"] == DEFAULT_ENCODER else "")
            table.add_row(name, str(e["dim"]), str(e["input_size"]), str(e.get("licence", "")), mark)
        out.print(table)

    _run(debug, show)


@app.command()
def bench(
    data: str = _o(..., "--data", help="Folder laid out like ../shared/data (dlpfc/<id>/, her2st/)."),
    out_dir: Path = _o(..., "--out", help="Output folder for results.json and report.md."),
    sections: str = _o(None, "--sections", help="e.g. dlpfc/151673,her2st/C2 (default: all found)."),
    protocols: str = _o("R,G,X", "--protocols",
                        help="R (recovery), G (4x generation), X (cross-section); also G9, G16 (9x, 16x)."),
    methods: str = _o(None, "--methods", help="Comma-separated methods (default: the standard set). All: "
                      "mean, knn, ridge, stnet, histogene, stage, thitogene, deepspace, histosge, histosge-paper."),
    seeds: str = _o("0", "--seeds", help="Comma-separated seeds."),
    encoder: str = _o(None, "--encoder"),
    quick: bool = _o(False, "--quick", help="One section, few epochs: a smoke test in under 2 minutes."),
    domains: str = _o("kmeans", "--domains", help="Spatial-domain clusterers: kmeans, stagate (needs "
                      'pip install "histosge[domains]"; about 10 minutes per DLPFC clustering on a CPU).'),
    debug: bool = _o(False, "--debug"),
):
    """Score every method on held-out spots under protocols R, G and X; write results.json + report.md."""
    from . import benchmark

    def split(text):
        return [x.strip() for x in text.split(",") if x.strip()] if text else None

    def job():
        try:
            seed_list = [int(s) for s in split(seeds) or [0]]
        except ValueError:
            raise InputError(f"seeds must be integers, got {seeds!r}", where="--seeds",
                             fix="e.g. --seeds 0,1,2") from None
        options = {"sections": split(sections), "protocols": split(protocols), "methods": split(methods),
                   "encoder": encoder, "domains": split(domains)}
        result = benchmark.run(data, out_dir, seeds=seed_list, quick=quick,
                               **{k: v for k, v in options.items() if v is not None})
        _summary("histosge bench", [("records", str(len(result.records))),
                                    ("results", str(Path(out_dir) / "results.json")),
                                    ("report", str(Path(out_dir) / "report.md"))])

    _run(debug, job)


def _terminate(signum, frame):  # kill: unwind like Ctrl-C so temporary files are removed
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - outside a command
        sys.exit(130)


if __name__ == "__main__":
    main()
