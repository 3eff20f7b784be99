"""Problem 2: the last layer and the features of a random-init ResNet-50, and the pretrained model's top-5."""

from __future__ import annotations

import torch

from robustlens.models.classify import Prediction, topk
from robustlens.models.layers import last_linear
from robustlens.report.blocks import Section, Text, figures
from robustlens.report.context import ReportContext


def prediction_words(preds: list[Prediction], who: str) -> str:
    """``"<who> sees a tabby (281) with probability 0.412; next: tiger cat (0.201), ..."``."""
    best, rest = preds[0], preds[1:]
    tail = ", ".join(f"{p.name} ({p.prob:.3f})" for p in rest)
    return (f"{who} sees {best.name} ({best.index}) with probability {best.prob:.3f} (logit {best.logit:.2f})"
            + (f"; next: {tail}." if tail else "."))


def _random_resnet(ctx: ReportContext, s: Section) -> dict:
    """The random-init ResNet-50 half: its last layer, its pooled features for the image, its top-5."""
    seed = ctx.settings.seed
    rnet = ctx.model("resnet50", "none", seed=seed)
    name, fc = last_linear(rnet)
    feats: dict[str, torch.Tensor] = {}
    handle = fc.register_forward_pre_hook(lambda _m, inp: feats.__setitem__("x", inp[0].detach()))
    try:
        with torch.no_grad():
            logits = rnet(ctx.input_for(rnet))
    finally:
        handle.remove()
    f = feats["x"][0]  # (2048,) the global-average-pooled output of layer4
    preds = topk(rnet, logits)[0]
    s.add(Text(
        f"The last layer of ResNet-50 is {name} = Linear({fc.in_features} → {fc.out_features}): it takes "
        f"{fc.in_features} input features (the global-average-pooled output of layer4). For this image the "
        f"randomly initialised network (seed {seed}) gives a feature vector of shape {tuple(f.shape)} "
        f"(mean {float(f.mean()):.4f}, max {float(f.max()):.4f}, {int((f > 0).sum())} non-zero)."))
    fig = ctx.topk_plot(preds, "p2_random_resnet50_top5_probs.png", title="random-init ResNet-50: top-5 probabilities")
    s.add(figures([(fig, "random-init ResNet-50: top-5 probabilities")]),
          Text(prediction_words(preds, "The random-init ResNet-50") + " These classes mean nothing: with random "
               "weights the logits are arbitrary (and can be large, so the softmax may even look confident)."))
    return {"last_layer": {"name": name, "in_features": fc.in_features, "out_features": fc.out_features},
            "feature_shape": list(f.shape), "random_init_topk": [p.to_dict() for p in preds]}


def section_problem2(ctx: ReportContext, s: Section) -> None:
    """Random-init ResNet-50 (last layer, features, meaningless top-5), then the pretrained model's top-5."""
    model = ctx.main_model()
    s.settings.update({"random-init model": f"resnet50, weights none, seed {ctx.settings.seed}",
                       "pretrained model": f"{model.name} ({model.weights})", "image": ctx.image_label})
    data = _random_resnet(ctx, s)
    x = ctx.input_for(model)
    with torch.no_grad():
        preds = topk(model, model(x))[0]
    fig_in = ctx.save(x[0], "input.png")
    fig_l = ctx.topk_plot(preds, "p2_pretrained_top5_logits.png", value="logit", title=f"{model.name}: top-5 logits")
    fig_p = ctx.topk_plot(preds, "p2_pretrained_top5_probs.png", title=f"{model.name}: top-5 probabilities")
    s.add(figures([(fig_in, f"input: {ctx.image_label}, {x.shape[-1]}×{x.shape[-2]} after {model.name}'s "
                            "preprocessing"),
                   (fig_l, "pretrained: top-5 logits"), (fig_p, "pretrained: top-5 probabilities")]),
          Text(prediction_words(preds, f"The pretrained {model.name}")))
    s.data = {**data, "pretrained_topk": [p.to_dict() for p in preds], "pretrained_model": model.describe()}
    ctx.shared["clean_top1"] = preds[0]
