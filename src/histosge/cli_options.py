"""CLI options declared once, each with its help text, for every command to share.

A command names its options with these aliases (``genes: Genes = 1000``) instead of
repeating ``typer.Option(...)``; the ranges in the help of numeric options come from
``histosge.options.RULES``, the same rules that ``options.validate`` enforces.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Annotated

import typer

from .options import RULES


def _ruled(name: str, text: str) -> str:
    return f"{text} Must be {RULES[name].describe()}."


SOURCE_HELP = ("A Space Ranger folder, an .h5ad file, or a dataset name such as her2st:C2 or dlpfc:151673 "
               "resolved in --data-dir (default: $HISTOSGE_DATA).")

Source = Annotated[str | None, typer.Argument(
    help=SOURCE_HELP + " Or leave it out and give a legacy-ST section as --counts, --spots and --image.",
    show_default=False)]
Counts = Annotated[str | None, typer.Option(
    "--counts", show_default=False,
    help="Legacy ST, a section as three files: the count table (STUtility's MOB1.tsv, genes x spots; her2st's "
         "ST-cnts/C2.tsv.gz, spots x genes), with --spots and --image, instead of SOURCE.")]
Spots = Annotated[str | None, typer.Option(
    "--spots", show_default=False,
    help="Legacy ST: the spot detector's table (STUtility's alignment_table_MOB1.tsv, her2st's "
         "ST-spotfiles/C2_selection.tsv): x, y, pixel_x, pixel_y and selected (1 under tissue).")]
Output = Annotated[Path, typer.Option(
    "-o", "--output", show_default=False,
    help="Output file: .h5ad, or .zarr for a zarr store. Written atomically; it may not be (or replace a "
         "file of) the input.")]
Image = Annotated[str | None, typer.Option(
    "--image", help="Full-resolution H&E image (TIFF/JPEG/PNG) the spot positions refer to; takes precedence.")]
DataDir = Annotated[str | None, typer.Option(
    "--data-dir", help="Folder that dataset names resolve in (default $HISTOSGE_DATA).")]
Encoder = Annotated[str | None, typer.Option("--encoder", help="Image encoder (see `histosge encoders`).")]
Weights = Annotated[str | None, typer.Option("--weights", help="Local weights file or folder for the encoder.")]
PatchScale = Annotated[float, typer.Option(
    "--patch-scale", help=_ruled("patch_scale", "Patch side as a multiple of the spot diameter."))]
Genes = Annotated[str | None, typer.Option(
    "--genes", metavar="NAMES", show_default=False,
    help="Genes always predicted, whatever their variance (e.g. ERBB2 in a HER2+ tumour): a comma-separated list "
         "(ERBB2,GRB7) or a text file with one name per line. Predicted in addition to the --n-top-genes HVGs.")]
NTopGenes = Annotated[int, typer.Option(
    "--n-top-genes", help=_ruled("n_top_genes", "Highly variable genes of the training spots predicted besides "
                                                "--genes (0: only the genes named with --genes)."))]
AllGenes = Annotated[bool, typer.Option(
    "--all-genes", help="Predict every gene detected in at least 1% of the training spots (the whole transcriptome) "
                        "instead of the --n-top-genes HVGs; --genes are added either way.")]
Reliability = Annotated[bool, typer.Option(
    "--reliability/--no-reliability",
    help="Estimate each gene's held-out Pearson (var['cv_pcc'] and var['reliable'] of the output; `histosge genes "
         "MODEL` ranks them). Free for histosge's neighbours and image modes; the paper's model and the baselines "
         "refit once per fold.")]
Method = Annotated[str, typer.Option("--method", help="Any method of `histosge methods` that runs on one section: "
                                                      "histosge (default), histosge-paper, knn, ridge, stnet, ...")]
TrainMethod = Annotated[str, typer.Option(
    "--method", help="The method to fit and save (`histosge methods`): histosge (default; --mode picks its mode), "
                     "histosge-paper, or a baseline (ridge, stnet, knn, ...).")]
Epochs = Annotated[int | None, typer.Option(
    "--epochs", help=_ruled("epochs", "Maximum training epochs (default 300 with early stopping; paper 1000)."))]
GroupSize = Annotated[int | None, typer.Option(
    "--group-size", help=_ruled("group_size", "Spots per attention group (default 50)."))]
Patience = Annotated[int | None, typer.Option(
    "--patience", help=_ruled("patience", "Early-stopping patience in epochs (default 20; none in paper mode)."))]
Seed = Annotated[int, typer.Option(
    "--seed", help=_ruled("seed", "Seeds the model (and the held-out split of recover)."))]
BatchSize = Annotated[int, typer.Option(
    "--batch-size", help=_ruled("batch_size", "Image patches encoded at once."))]
Device = Annotated[str | None, typer.Option(
    "--device", help="cpu, cuda, cuda:N or mps (default: cuda if available, else cpu).")]
CacheDir = Annotated[str | None, typer.Option(
    "--cache-dir", help="Feature cache folder (default $HISTOSGE_CACHE or ~/.cache/histosge).")]
Factor = Annotated[int, typer.Option(
    "--factor", help=_ruled("factor", "Spot density relative to the measured grid: 4 (midpoints), 9 or 16."))]
Holdout = Annotated[float, typer.Option(
    "--holdout", help=_ruled("holdout", "Fraction of spots held out and scored."))]
PLOT_HELP = ("Also write <output>_genes.png: each gene's map, measured next to predicted where measured spots exist, "
             "titled with its cv_pcc, coloured over the values' 1st-99th percentile. --plot alone: the genes named "
             "with --genes, else the reliable markers of the tissue, else the most reliable genes; --plot ERBB2,GRB7: "
             "these.")
Plot = Annotated[str | None, typer.Option("--plot", metavar="[GENES]", show_default=False, help=PLOT_HELP)]
AlignmentCheck = Annotated[bool, typer.Option(
    "--alignment-check/--no-alignment-check",
    help="Refuse an image that does not fit the spot positions (flipped, rotated, shifted, rescaled, "
         "another section's). --no-alignment-check reads it anyway; the score is still recorded.")]
Prior = Annotated[str | None, typer.Option(
    "--prior", help="A model file trained on OTHER sections of the same tissue (histosge train OTHERS --mode "
                    "image), read as a prior for this section. Refused if it saw any spot of this section, or reads "
                    "other features (encoder, patch size).")]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")]

# -- train / predict ------------------------------------------------------------------------------
Sources = Annotated[list[str] | None, typer.Argument(
    help="Sections to train on (" + SOURCE_HELP[0].lower() + SOURCE_HELP[1:] + "); a legacy-ST section may "
         "also be given as --counts, --spots and --image.", show_default=False)]
ModelOutput = Annotated[Path, typer.Option(
    "-o", "--output", show_default=False,
    help="Model file to write (.histosge): JSON description + safetensors arrays, no pickle.")]
Mode = Annotated[str | None, typer.Option(
    "--mode", show_default=False,
    help="--method histosge only: neighbours (default; predict within a measured section, as superres), image "
         "(predict any H&E of the same tissue, e.g. whole slides) or paper (the authors' model).")]
ModelInput = Annotated[str, typer.Argument(help="A model file written by `histosge train`.", show_default=False)]
PredictSource = Annotated[str, typer.Argument(
    help="An H&E slide (pyramidal TIFF/OME-TIFF/SVS; NDPI/MRXS with histosge[slides]; JPEG/PNG with --mpp), "
         "or a section: " + SOURCE_HELP, show_default=False)]
Mpp = Annotated[float | None, typer.Option(
    "--mpp", help="Micrometres per pixel of the slide, when its file does not say (never guessed).")]
PredictFactor = Annotated[int | None, typer.Option(
    "--factor", help="Spots 4, 9 or 16 times denser than the training platform's pitch (a section: than its "
                     "measured spots; default 4 for a neighbours-mode model).")]
PitchUm = Annotated[float | None, typer.Option(
    "--pitch-um", help="Distance between virtual spots on a slide, in micrometres (default: the training "
                       "platform's, e.g. Visium 100, legacy ST 200).")]
PlotGenes = Plot

# -- cohorts (predict --out-dir) -------------------------------------------------------------------
PredictSources = Annotated[list[str], typer.Argument(
    help="What to predict. With -o: one H&E slide (pyramidal TIFF/OME-TIFF/SVS; NDPI/MRXS with histosge[slides]; "
         "JPEG/PNG with --mpp) or a section (" + SOURCE_HELP[0].lower() + SOURCE_HELP[1:] + "). With --out-dir: "
         "any number of slides, folders of slides, or .txt/.csv lists of them (a .csv may name each output in a "
         "'name' column).", show_default=False)]
OptionalOutput = Annotated[Path | None, typer.Option(
    "-o", "--output", show_default=False,
    help="Output file for one input: .h5ad, or .zarr for a zarr store. Written atomically; it may not be (or "
         "replace a file of) the input.")]
OutDir = Annotated[Path | None, typer.Option(
    "--out-dir", show_default=False,
    help="Predict many slides: one <slide>.h5ad each in this folder (created if absent), and manifest.csv. "
         "Rerun the same command to resume: slides done with this model are skipped (by content), failed ones "
         "retried.")]
Ray = Annotated[str | None, typer.Option(
    "--ray", show_default=False, metavar="[ADDRESS]",
    help="Run the --out-dir cohort on Ray (pip install \"histosge[ray]\"). --ray alone: $RAY_ADDRESS if set, "
         "else a local Ray instance started and stopped by the run; --ray host:port, ray://host:port or auto "
         "joins a cluster.")]
Workers = Annotated[int | None, typer.Option(
    "--workers", help="Ray workers (actors), each loading the model once (default: as many as the cluster's "
                      "CPUs, or GPUs with --gpus-per-worker, allow).")]
GpusPerWorker = Annotated[float, typer.Option(
    "--gpus-per-worker", help="GPUs each Ray worker holds and encodes on (0: CPU workers).")]
CpusPerWorker = Annotated[float, typer.Option(
    "--cpus-per-worker", help="CPUs each Ray worker holds (its patch readers and threads).")]
Retries = Annotated[int, typer.Option(
    "--retries", help="Times a slide whose Ray worker died (killed, out of memory) is tried again on a new one.")]
KeepFeatures = Annotated[bool, typer.Option(
    "--keep-features", help="Also store the encoder's features (obsm['features']) in the output.")]
Lossless = Annotated[bool, typer.Option(
    "--lossless", help="Store predictions as computed (float32); by default they are rounded to multiples of "
                       "2^-10 (error <= 0.0005 in log1p units), which makes outputs about 2.5x smaller.")]


# -- groups of options several commands take, declared once --------------------------------------
def section_input(image: Image = None, counts: Counts = None, spots: Spots = None, data_dir: DataDir = None):
    """Where a section comes from besides SOURCE (superres, recover, train)."""


def model_options(encoder: Encoder = None, weights: Weights = None, patch_scale: PatchScale = 2.0,
                  genes: Genes = None, n_top_genes: NTopGenes = 1000, all_genes: AllGenes = False,
                  reliability: Reliability = True, epochs: Epochs = None, group_size: GroupSize = None,
                  patience: Patience = None, seed: Seed = 0, batch_size: BatchSize = 64, device: Device = None,
                  cache_dir: CacheDir = None, prior: Prior = None):
    """The model a command fits (superres, recover, train): ``histosge.options.ModelOptions`` but
    ``method``, whose help each command words its own way."""


def output_options(plot: Plot = None, keep_features: KeepFeatures = False, lossless: Lossless = False):
    """What a predicted AnnData is written with (superres, recover)."""


def run_options(alignment_check: AlignmentCheck = True, quiet: Quiet = False, debug: Debug = False):
    """How a command that reads sections runs."""


#: The names ``model_options`` declares (what a command hands on as ``ModelOptions``).
MODEL_OPTIONS = tuple(inspect.signature(model_options).parameters)


def with_options(*groups):
    """Decorate a command whose own parameters end in ``**opts``: its signature (what typer reads)
    becomes its own parameters followed by those of ``groups`` (functions above, each declaring a
    group of options once), and ``opts`` receives the groups' values by name."""

    def deco(fn):
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.kind is not p.VAR_KEYWORD]
        shared = [p for g in groups for p in inspect.signature(g, eval_str=True).parameters.values()]
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own + shared]
        names = [p.name for p in own]

        @functools.wraps(fn)
        def command(**kw):
            return fn(**{n: kw.pop(n) for n in names}, **kw)

        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # typer reads the signature above, not fn's
        return command

    return deco
