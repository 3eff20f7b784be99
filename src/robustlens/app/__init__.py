"""The interactive app (Gradio), offline and on localhost only: :func:`launch` serves :func:`build_app`."""
