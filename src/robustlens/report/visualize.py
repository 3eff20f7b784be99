"""Feature visualisation: an image optimised from noise to excite one channel of the pretrained model."""

from __future__ import annotations

from robustlens.models.layers import default_inversion_layers
from robustlens.report.blocks import Section, Text, figures, fmt, safe_file_name, strip_history
from robustlens.report.context import ReportContext


def section_visualize(ctx: ReportContext, s: Section) -> None:
    """FFT-parameterised visualisation of channel 0 of a middle layer (or the settings' unit)."""
    from robustlens.recipes.visualize import visualize

    st = ctx.settings
    model = ctx.main_model()
    unit = st.visualize_unit or f"{default_inversion_layers(model)[1]}:0"
    s.settings.update({"model": f"{model.name} ({model.weights})", "unit": unit, "parameterisation": "fft",
                       "steps": st.visualize_steps, "size": st.visualize_size, "seed": st.seed})
    res = visualize(model, unit, param="fft", steps=st.visualize_steps, size=st.visualize_size, seed=st.seed,
                    progress=False)
    f = ctx.save(res.images[0], f"visualize_{safe_file_name(unit)}.png")
    d = strip_history(res.to_dict())
    s.add(Text(
        f"An image optimised from noise (FFT parameterisation, decorrelated colour, random jitter/scale/rotation) "
        f"to maximise the mean activation of channel {unit}: {fmt(d['start_value'][0])} at the start, "
        f"{fmt(d['value'][0])} at the end."),
          figures([(f, f"what {unit} responds to")]))
    s.data = d
