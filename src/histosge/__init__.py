"""histosge: high-resolution spatial gene expression from H&E histology (HisToSGE, done right).

Pipeline: read -> patches -> encode -> model (train/predict) -> evaluate -> plot.

    >>> import histosge
    >>> adata = histosge.read_section("dlpfc:151673")          # or a Space Ranger folder
    >>> hd = histosge.superres(adata)                           # 4x denser spots
    >>> rec = histosge.recover(adata, holdout=0.5, seed=0)      # held-out scores in rec.uns
    >>> model = histosge.HisToSGE("image").fit([a, b])           # train once ...
    >>> model.save("tissue.histosge")
    >>> out = histosge.predict("tissue.histosge", "slide.ome.tif")  # ... predict any H&E slide

Heavy modules (torch, scanpy) load on first use, so ``import histosge.read`` stays light.
"""

from .errors import EncoderError, HistosgeError, InputError, OutputError

__version__ = "0.2.0"


def read_section(source, *, image=None, data_dir=None, check_alignment=True):
    """Read one section (Space Ranger folder, .h5ad or ``dataset:section``) into a section AnnData.

    One door for every format, so the rest of the pipeline sees one AnnData layout
    (docs/ARCHITECTURE.md) whatever the lab's files look like. Wraps
    :func:`histosge.read.read_section`.

    Parameters
    ----------
    source : str or path
        A Space Ranger folder, an ``.h5ad`` file, or a dataset name (``her2st:C2``,
        ``dlpfc:151673``) looked up in ``data_dir``. An existing path wins over a name.
    image : str or path, optional
        The full-resolution H&E the spot positions were measured on (referenced, not loaded).
    data_dir : str or path, optional
        The folder dataset names are looked up in; default ``$HISTOSGE_DATA``.
    check_alignment : bool
        False reads an image that fails the alignment check with a warning instead of an error
        (CLI ``--no-alignment-check``); the score is recorded either way.

    Returns
    -------
    AnnData
        The section AnnData of :func:`histosge.read.read_section` (raw counts in ``X``;
        ``obs['array_row']``, ``obs['array_col']``, ``obsm['spatial']``,
        ``uns['spatial'][library_id]``, ``uns['histosge']``).

    Raises
    ------
    InputError
        The source is not found or not a section, its files are inconsistent, or the image does
        not fit the spot positions (one line: what, where, how to fix).
    """
    from .read import read_section as _read

    return _read(source, image=image, data_dir=data_dir, check_alignment=check_alignment)


def superres(adata, image=None, **options):
    """Predict expression at 4x (or 9x, 16x) denser spots between a section's measured spots.

    Fits ``HisToSGE`` (neighbours mode) on every measured spot, then predicts spots at the
    midpoints between grid neighbours (4x), or on every edge cut in 3 or 4 parts and the cells
    between (9x, 16x; ``geometry.dense_points``). Protocols G, G9 and G16 of ``histosge bench``
    score each density against measured spots. Wraps :func:`histosge.tasks.superres`.

    Parameters
    ----------
    adata : AnnData
        A section as :func:`read_section` returns it (raw counts, grid, image).
    image : str or path, optional
        The full-resolution H&E to cut patches from; default the image the section references.
    **options
        Keyword options, checked before any work (``histosge.options.RULES``):

        - ``factor`` (4, 9 or 16; default 4): spots per measured spot.
        - ``method`` (default ``"histosge"``): any method of ``histosge methods`` that runs on
          one section: ``"histosge"`` (our model), ``"histosge-paper"`` (the authors'), or a
          baseline (``"knn"``, ``"ridge"``, ``"stnet"`` ...; docs/EXTENDING.md adds one).
        - ``encoder``, ``weights``: image encoder (default ``encode.DEFAULT_ENCODER``) and a
          local weights file.
        - ``patch_scale`` (2.0): patch side in spot diameters.
        - ``genes`` (names, or a text file with one per line): genes always predicted, besides
          ``n_top_genes`` (1000) HVGs of the training spots (0: only the named ones), or every
          gene detected in >= 1% of them with ``all_genes=True``.
        - ``reliability`` (True): estimate each gene's held-out Pearson (``var['cv_pcc']``).
        - ``epochs``, ``group_size``, ``patience``: the network's schedule (default the model's;
          a method without one refuses them).
        - ``prior``: an image-mode model file fitted on other sections (``HisToSGE(prior=...)``).
        - ``seed`` (0), ``device``, ``cache_dir`` (feature cache), ``batch_size`` (64),
          ``progress`` (True).

    Returns
    -------
    AnnData
        Measured + generated spots:

        - ``X``: log1p(normalize_total(1e4)) of the HVGs, measured values for measured spots,
          predictions for generated ones; ``var``: the genes (with the input's string
          annotations such as ``gene_ids``), ``var['cv_pcc']`` (the Pearson each gene's
          prediction is expected to have at spots the model never saw; NaN when not estimated)
          and ``var['reliable']`` (``histosge.model.reliability.RULE``).
        - ``layers['predicted']``: the model's output for every spot (in-sample on measured ones).
        - ``obs['spot_type']`` ('measured' or 'generated'), ``obs['array_row']``,
          ``obs['array_col']`` (fractional grid positions for generated spots),
          ``obs['annotation']`` (when the input has it; NaN on generated spots),
          ``obs['novelty']`` and ``obs['novel']`` (HisToSGE's methods; ``novelty > 1``: the
          spot's image lies far from the training images).
        - ``obsm['spatial']``: full-resolution pixels (x, y); ``obsm['features']``: the image
          features of every spot (methods that read the image).
        - ``uns['spatial'][library_id]``: the input's images and scale factors, so
          ``scanpy.pl.spatial`` draws the output.
        - ``uns['histosge']``: ``task`` ('superres'), ``library_id``, ``grid``, ``factor``,
          ``n_measured``, ``n_generated``, ``hvg_flavour``, ``array_to_pixel_rms_px`` (fit of
          grid to pixels), ``settings`` (the options), ``input`` (the reader's record:
          source, grid, alignment, spot size), ``features`` (encoder record), ``model``,
          ``training_scores`` (the model's out-of-sample scores on its training spots),
          ``gene_choice`` (named genes, ``n_top_genes``, ``all_genes``, HVG flavour, the
          training datasets), ``reliability`` (the rule, how cv_pcc was estimated, the number of
          reliable genes and the top five),
          ``seconds`` (features, fit_predict, total) and ``note``.

    Raises
    ------
    InputError
        A bad or unknown option, a named gene the section does not measure (with close names), a
        section without grid or image, or no two measured spots that are grid neighbours.
    """
    from .tasks import superres as _superres

    return _superres(adata, image, **options)


def recover(adata, image=None, **options):
    """Hold out a seeded fraction of the spots, predict them, and score against their measurement.

    The honest test of a model: the score is on held-out spots only (scoring training spots,
    as the paper did, inflates Pearson several-fold). Wraps :func:`histosge.tasks.recover`.

    Parameters
    ----------
    adata : AnnData
        A section as :func:`read_section` returns it.
    image : str or path, optional
        The full-resolution H&E to cut patches from; default the image the section references.
    **options
        ``holdout`` (fraction held out, default 0.5) and ``progress`` (True), and the model
        options of :func:`superres` (``method``, ``encoder``, ``weights``, ``patch_scale``,
        ``genes``, ``n_top_genes``, ``all_genes``, ``reliability``, ``epochs``, ``group_size``,
        ``patience``, ``prior``, ``seed``, ``device``, ``cache_dir``, ``batch_size``).

    Returns
    -------
    AnnData
        Every spot of the section:

        - ``X``: measured log1p(normalize_total(1e4)) of the predicted genes; ``var``: the genes,
          with ``cv_pcc`` and ``reliable`` (as :func:`superres`).
        - ``layers['predicted']``: the prediction (out-of-sample on held-out spots).
        - ``obs['split']`` ('train' or 'held-out'), ``obs['array_row']``, ``obs['array_col']``,
          ``obs['annotation']`` (when the input has it), ``obs['novelty']``, ``obs['novel']``
          (HisToSGE's methods).
        - ``obsm['spatial']`` (full-resolution pixels), ``obsm['features']`` (methods that read
          the image).
        - ``uns['spatial'][library_id]``: the input's images and scale factors.
        - ``uns['histosge']``: ``task`` ('recover'), ``library_id``, ``grid``, ``hvg_flavour``,
          ``n_train``, ``n_test``, ``holdout``, ``metrics`` (held-out spots only: ``pcc``,
          ``pcc_top50``, ``mse``, ``mae``, ``n_genes``, ``n_spots``; see
          :func:`histosge.evaluate.score`), ``metrics_scope``, ``input``, ``settings``,
          ``features``, ``model``, ``gene_choice``, ``reliability``, ``seconds``.

    Raises
    ------
    InputError
        A bad or unknown option, a named gene the section does not measure, or a section
        without grid or image.
    """
    from .tasks import recover as _recover

    return _recover(adata, image, **options)


def predict(model, source, **options):
    """Predict with a fitted or saved model on an H&E slide or a measured section.

    The trained model's second half: ``histosge train`` once, then any slide of the same
    tissue. Wraps :func:`histosge.tasks.predict`.

    Parameters
    ----------
    model : HisToSGE or SectionModel or str or path
        A fitted model of any method, or the file its ``save`` wrote (``histosge train``).
    source : str or path or AnnData
        An H&E slide (an image file: image-mode models only), or a section (path, dataset name
        or AnnData with expression).
    **options
        - ``mpp``: micrometres per pixel of a slide that does not record it.
        - ``factor`` (4, 9, 16): spots denser than the training pitch (slide), or generated
          spots between measured ones (section; default 4 for neighbours mode).
        - ``pitch_um``: the virtual spots' pitch on a slide instead of ``factor``.
        - ``image``, ``data_dir``: as :func:`read_section`, for a section.
        - ``cache_dir``, ``batch_size`` (64), ``progress`` (True).

    Returns
    -------
    AnnData
        What the model's ``predict`` returns (``X``, ``var`` with ``cv_pcc`` and ``reliable``
        from the model file, ``obs['array_row']``, ``obs['array_col']``, ``obsm['spatial']``,
        ``uns['spatial']``, ``uns['histosge']`` with ``reliability`` and ``gene_choice``;
        ``obsm['features']`` for methods that read the image; ``obs['novelty']``,
        ``obs['novel']`` for HisToSGE), and:

        - a slide: ``uns['histosge']`` gains ``input`` ('slide'), ``source``, ``pitch_um``,
          ``slide`` (width, height, levels, tissue_fraction, mpp_source) and ``seconds``;
        - a section: ``obs['spot_type']`` ('measured' or 'generated'), and
          ``uns['histosge']`` gains ``input`` ('section'), ``section`` (the reader's record),
          ``source``, ``factor``, ``n_measured``, ``n_generated`` and ``seconds``.

    Raises
    ------
    InputError
        An unreadable model file; a slide given to a model that needs measured spots; both
        ``factor`` and ``pitch_um``; an unknown pixel size; no tissue on the slide.
    """
    from .tasks import predict as _predict

    return _predict(model, source, **options)


def read_slide(path, *, pitch_um, spot_diameter_um, mpp=None):
    """Lay virtual spots over the tissue of an H&E slide, so a model can predict a slide alone.

    Wraps :func:`histosge.read.slide.read_slide`.

    Parameters
    ----------
    path : str or path
        A whole-slide image (pyramidal TIFF, OME-TIFF, SVS; other vendors through OpenSlide) or
        a plain JPEG/PNG/TIFF with ``mpp``.
    pitch_um : float
        Centre-to-centre distance of the virtual spots in micrometres (hexagonal lattice).
    spot_diameter_um : float
        The spot size the model was trained with (Visium 55, legacy ST 100).
    mpp : float, optional
        Micrometres per pixel, overriding (or supplying) the file's own.

    Returns
    -------
    AnnData
        The spots of :func:`histosge.read.slide.read_slide` (no genes; ``obs['array_row']``,
        ``obs['array_col']``, ``obsm['spatial']``, ``uns['spatial']``, ``uns['histosge']``).

    Raises
    ------
    InputError
        An unreadable file, an unknown or implausible pixel size, no tissue, or a slide smaller
        than one spot pitch.
    """
    from .read.slide import read_slide as _read_slide

    return _read_slide(path, pitch_um=pitch_um, spot_diameter_um=spot_diameter_um, mpp=mpp)


def __getattr__(name):  # the model classes load torch: only on first use
    if name in ("HisToSGE", "SectionModel"):
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module 'histosge' has no attribute {name!r}")


__all__ = ["EncoderError", "HisToSGE", "HistosgeError", "InputError", "OutputError", "SectionModel", "predict",
           "read_section", "read_slide", "recover", "superres", "__version__"]
