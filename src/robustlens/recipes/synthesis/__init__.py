"""Image synthesis with a single robust classifier (Santurkar et al. 2019): generation, inpainting,
super-resolution, image-to-image translation, sketch-to-image and painting with features, as recipes over
:func:`robustlens.optim.engine.optimize`."""

from robustlens.recipes.synthesis.objectives import (
    MaskedChannel,
    SquaredErrorOutside,
    box_mask,
    fill_mean,
    random_box_masks,
)
from robustlens.recipes.synthesis.seeds import (
    ClassGaussians,
    LowRankGaussians,
    SeedDistribution,
    class_gaussians,
    downsample,
    fit_class_gaussians,
    shipped_seeds,
)
from robustlens.recipes.synthesis.tasks import (
    PROCEDURES,
    Procedure,
    SynthesisResult,
    generate,
    inpaint,
    paint_features,
    procedure,
    sketch_to_image,
    super_resolve,
    translate,
)

__all__ = ["PROCEDURES", "ClassGaussians", "LowRankGaussians", "SeedDistribution", "shipped_seeds", "MaskedChannel", "Procedure", "SquaredErrorOutside", "SynthesisResult",
           "box_mask", "class_gaussians", "downsample", "fill_mean", "fit_class_gaussians", "generate", "inpaint",
           "paint_features", "procedure", "random_box_masks", "sketch_to_image", "super_resolve", "translate"]
