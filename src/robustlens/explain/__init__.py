"""What does the model look at? Attribution maps (gradients, SmoothGrad, Integrated Gradients, Grad-CAM,
Grad-CAM++, Guided Backprop), their visualisation, sanity checks (model randomisation), faithfulness
(deletion/insertion) and the standard-vs-robust edge-alignment comparison.

Every method takes a :class:`robustlens.models.Classifier` and images (N,3,H,W) in [0, 1], explains the logit
of a target class (default: the model's top-1) and never changes the model.
"""

from robustlens.explain._core import Attribution
from robustlens.explain.alignment import edge_alignment, robust_vs_standard, sobel_edges
from robustlens.explain.api import ExplainResult, explain
from robustlens.explain.cam import GradCAM, GradCAMPlusPlus, default_layer
from robustlens.explain.faithfulness import Curves, deletion_insertion
from robustlens.explain.gradients import GradientXInput, GuidedBackprop, Saliency, SmoothGrad
from robustlens.explain.integrated import IntegratedGradients, make_baseline, quadrature
from robustlens.explain.methods import DEFAULT_METHODS, METHODS, attribute
from robustlens.explain.sanity import SanityResult, plot_sanity, sanity_check
from robustlens.explain.visual import clip_normalise, overlay, plot_grid, reduce_channels

__all__ = ["Attribution", "Curves", "DEFAULT_METHODS", "ExplainResult", "GradCAM", "GradCAMPlusPlus", "GradientXInput",
           "GuidedBackprop", "IntegratedGradients", "METHODS", "Saliency", "SanityResult", "SmoothGrad", "attribute",
           "clip_normalise", "default_layer", "deletion_insertion", "edge_alignment", "explain", "make_baseline",
           "overlay", "plot_grid", "plot_sanity", "quadrature", "reduce_channels", "robust_vs_standard",
           "sanity_check", "sobel_edges"]
