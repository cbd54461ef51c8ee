"""Start the web app: a `Studio` over the run folders, the page, Gradio's queue and its file rules.

What the server may read and write is kept narrow: uploads go to a temporary folder made for this server
(removed when it stops) and are refused above `max_upload_mb`; the only files it serves are that folder's
and the output folder's (`allowed_paths`), never the run folders' weights or anything else on the disk.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from latentdiff.ui.app import CSS, build_page, require_gradio
from latentdiff.ui.worker import Studio

log = logging.getLogger(__name__)


@dataclass
class ServeConfig:
    runs: list[Path]
    out: Path = Path("ui_outputs")  # every image made is saved here, in a sub-folder per run
    host: str = "127.0.0.1"  # localhost only unless told otherwise
    port: int = 7860
    device: str = "auto"
    max_upload_mb: float = 10.0
    max_queue: int = 32  # requests waiting beyond this are refused with a message, not piled up


@dataclass
class Server:
    """A launched app: `url`, and `close()` to stop it and remove its upload folder."""

    demo: object
    url: str
    upload_dir: Path
    previous_temp_dir: str | None = None

    def close(self) -> None:
        self.demo.close()
        shutil.rmtree(self.upload_dir, ignore_errors=True)
        if self.previous_temp_dir is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = self.previous_temp_dir


def start_server(config: ServeConfig) -> Server:
    """Load the runs, build the page and launch it without blocking; bad run folders fail here, before
    anything listens."""
    gr = require_gradio()
    studio = Studio(config.runs, config.out, device=config.device)
    config.out.mkdir(parents=True, exist_ok=True)
    upload_dir = Path(tempfile.mkdtemp(prefix="latentdiff-ui-"))
    # Gradio writes uploads (and copies of the files it serves) to GRADIO_TEMP_DIR, which it reads again
    # at every upload and check: it stays set while the server runs
    previous = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(upload_dir)
    demo = build_page(studio)
    demo.queue(max_size=config.max_queue)
    demo.launch(
        server_name=config.host,
        server_port=config.port,
        prevent_thread_lock=True,
        quiet=True,
        inbrowser=False,
        share=False,
        allowed_paths=[str(config.out.resolve())],
        max_file_size=int(config.max_upload_mb * 1024 * 1024),
        css=CSS,
        theme=gr.themes.Default(),
    )
    return Server(demo, demo.local_url, upload_dir, previous)
