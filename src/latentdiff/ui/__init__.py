"""The web app, `latentdiff serve RUN …`: a thin layer over `LatentDiffusionPipeline` (Gradio, the `ui`
extra, imported only when the server starts).

- `worker.py`: the runs served and the work behind each button (no web framework);
- `app.py`: the page and its handlers; `server.py`: launching it with its file and queue rules;
- `reproduce.py`: the one call that makes an image from its saved parameters (also `sample --from-png`).
"""
