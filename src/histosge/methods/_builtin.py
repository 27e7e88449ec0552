"""The built-in methods' registrations, in the order of the benchmark's tables.

Each names its class as ``"module:Class"`` (``register_lazy``), imported on first use, so that
``histosge methods``, ``--method`` checks and ``specs()`` import no torch; the class binds to its
spec with ``@builtin(name)``. A method of your own registers with ``register_method`` in its own
file (docs/EXTENDING.md).
"""

from __future__ import annotations

from ._registry import register_lazy

#: The section model of HisToSGE's three methods: its constructor (``mode``) and model-file layout.
HISTOSGE = "histosge.model.estimator:HisToSGE"

register_lazy("mean", "histosge.methods.mean:Mean",
    description="the training spots' mean of each gene, everywhere (the floor of MSE/MAE)",
    reads_image=False, default=True)
register_lazy("knn", "histosge.methods.knn:KNN",
    description="inverse-distance-weighted mean of the k nearest measured spots (k by "
    "leave-one-out CV); no image", reads_image=False,
    needs_target_expression=True, default=True)
register_lazy("ridge", "histosge.methods.ridge:Ridge",
    description="HEST-Benchmark's linear probe: standardise -> PCA 256 -> ridge "
    "(Jaume et al., NeurIPS 2024)", default=True)
register_lazy("stnet", "histosge.methods.stnet:STNet",
    description="ST-Net (He et al., Nat Biomed Eng 2020): an MLP head on frozen image "
    "features, each spot on its own", quick_epochs=15, default=True)
register_lazy("histogene", "histosge.methods.histogene:HisToGene",
    description="HisToGene (Pang et al., bioRxiv 2021): a ViT over the spots of a "
    "section, image features + grid-position embeddings",
    quick_epochs=15, reads_positions=True, fit_takes_query=True, default=True)
register_lazy("stage", "histosge.methods.stage:STAGE",
    description="STAGE (Li et al., Nucleic Acids Res 2024): an autoencoder whose 2-d code is "
    "pulled onto the array coordinates; decodes a spot's coordinates; no image",
    quick_epochs=20, needs_target_expression=True, reads_positions=True, reads_image=False,
    section_params=("grid",))
register_lazy("thitogene", "histosge.methods.thitogene:THItoGene",
    description="THItoGene (Jia et al., Brief Bioinform 2024): capsule routing of image "
    "features, array x/y embeddings, a ViT and graph attention over a section",
    quick_epochs=3, reads_positions=True, fit_takes_query=True)
register_lazy("deepspace", "histosge.methods.deepspace:DeepSpaCE",
    description="DeepSpaCE (Monjo et al., Sci Rep 2022): VGG16's classifier on frozen "
    "image features, each gene min-max scaled", quick_epochs=3)
register_lazy("histosge", "histosge.methods.histosge:HisToSGENeighbours",
    description="HisToSGE (Shi et al. 2024), re-implemented: measured neighbours' "
    "context + image + a correction network (neighbours mode)",
    quick_epochs=10, reads_positions=True, default=True, cross_section="histosge-image", model_mode="neighbours",
    model_class=HISTOSGE, reads_prior=True)
register_lazy("histosge-paper", "histosge.methods.histosge_paper:HisToSGEPaper",
    description="HisToSGE as the authors published it (Shi et al. 2024): image "
    "features + grid positions, 1000 fixed epochs",
    quick_epochs=10, reads_positions=True, model_mode="paper", model_class=HISTOSGE)
register_lazy("histosge-image", "histosge.methods.histosge_image:HisToSGEImage",
    description="HisToSGE from the image alone (histosge train --mode image): each spot's "
    "features with its ring's, a ridge probe as context + the correction network; any H&E",
    quick_epochs=10, model_mode="image", model_class=HISTOSGE)
register_lazy("ridge+pooled", "histosge.methods.ridge_pooled:RidgePooled",
    description="ridge fitted on the other sections' spots pooled with the section's "
    "(protocols R+ and G+)", default=True, section_params=("cohort",))
register_lazy("stnet+pooled", "histosge.methods.stnet_pooled:STNetPooled",
    description="ST-Net fitted on the other sections' spots pooled with the "
    "section's (protocols R+ and G+)", quick_epochs=15, default=True,
    section_params=("cohort",))
register_lazy("histosge+prior", "histosge.methods.histosge_prior:HisToSGEPrior",
    description="HisToSGE with a prior fitted on the other sections of the "
    "dataset (protocols R+ and G+)", quick_epochs=10,
    reads_positions=True, default=True, section_params=("cohort",),
    instead="use --method histosge --prior MODEL (an image-mode model: histosge train --mode image)")
