"""DeepDream of the report's image at a middle layer of the pretrained model."""

from __future__ import annotations

from robustlens.models.layers import default_inversion_layers
from robustlens.report.blocks import Section, Text, figures, fmt, safe_file_name, strip_history
from robustlens.report.context import ReportContext


def section_dream(ctx: ReportContext, s: Section) -> None:
    """Gradient ascent on the mean squared activation of one layer, over octaves with jitter."""
    from robustlens.recipes.dream import dream

    st = ctx.settings
    model = ctx.main_model()
    layer = st.dream_layer or default_inversion_layers(model)[1]
    s.settings.update({"model": f"{model.name} ({model.weights})", "layer": layer,
                       "steps per octave": st.dream_steps, "octaves": st.dream_octaves, "seed": st.seed})
    x = ctx.input_for(model)
    res = dream(model, x, layer, steps=st.dream_steps, octaves=st.dream_octaves, seed=st.seed, progress=False)
    d = strip_history(res.to_dict())
    orig = ctx.save(x[0], "dream_original.png")
    out = ctx.save(res.image[0], f"dream_{safe_file_name(layer)}.png")
    s.settings.update({"octave sizes": ", ".join(f"{h}×{w}" for h, w in res.octave_sizes),
                       "step size": res.settings["step_size"], "jitter": res.settings["jitter"]})
    s.add(Text(
        f"Gradient ascent on the mean squared activation of layer {layer} over {st.dream_octaves} octave(s) with "
        f"random jitter: the image is pushed towards whatever that layer responds to. Mean squared activation "
        f"{fmt(d['start_mean_square_activation'])} at the start, {fmt(d['final_mean_square_activation'])} at "
        f"the end."),
          figures([(orig, "original"), (out, f"DeepDream at {layer}")]))
    s.data = d
