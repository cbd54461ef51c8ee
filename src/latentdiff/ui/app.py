"""The Gradio page over a `Studio`: settings on the left, one tab per action on the right.

Every handler turns an error into a message on the page (`gr.Error`, shown as a toast) and never lets one
reach Gradio as a bare exception, which would show only "Error" and log a traceback. The four actions that
sample share one queue slot (`concurrency_id="sampling"`, limit 1): the models share one device, so a
second request waits its turn, and Gradio shows its place in the queue.
"""

# no `from __future__ import annotations`: Gradio reads the handlers' `gr.Request` hints at run time
import logging
import queue
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from latentdiff.io.generation_params import GenerationParams, read_generation_params
from latentdiff.ui.worker import MAX_FRAMES, MAX_IMAGES, MAX_STEPS, SAMPLERS, Cancelled, Studio

log = logging.getLogger(__name__)

NO_CLASS = "(none)"  # the class dropdowns' entry for "no class": unconditional / the learned null
RANDOM_SEED = -1  # the seed box's value for "draw a fresh seed"
SEEDS, PROMPTS = "two seeds", "two prompts"  # what the Interpolate tab walks between
# (label, GenerationParams.guidance_kind): shown for runs with an autoguidance guide model
GUIDANCE_KINDS = [("autoguidance", "auto"), ("classifier-free", "cfg")]

# tiny images (8–64 px) are drawn with hard pixel edges instead of the browser's blur
CSS = """
#gallery img, #preview img, #img2img-result img, #inpaint-result img, #inpaint-mask img, #interp-result img
  { image-rendering: pixelated; }
#preview img, #inpaint-result img, #inpaint-mask img { width: 100%; height: 100%; object-fit: contain; }
"""


def require_gradio():
    """Gradio, or an ImportError saying how to install it (it is the optional `ui` extra)."""
    try:
        import gradio as gr
    except ImportError as e:
        raise ImportError(
            f"the web UI needs Gradio, which is not installed ({e}): pip install 'latentdiff[ui]'"
        ) from None
    return gr


def page_error(gr, err: BaseException) -> Exception:
    """The message the page shows for `err`: its text for the errors users cause (bad values, unreadable
    files), the kind and text of anything else (also logged with its traceback for the server's log)."""
    if isinstance(err, gr.Error):
        return err
    if isinstance(err, ValueError | OSError | KeyError | RuntimeError | ImportError):
        return gr.Error(str(err).strip() or type(err).__name__)
    log.exception("unexpected error in the web UI", exc_info=err)
    return gr.Error(f"unexpected {type(err).__name__}: {err}")


class Page:
    """The page's handlers, bound to one `Studio`, and the cancel switch of each browser session."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self._cancel: dict[str, threading.Event] = {}
        self._cancel_lock = threading.Lock()

    def cancel_event(self, session: str, fresh: bool = False) -> threading.Event:
        with self._cancel_lock:
            if fresh or session not in self._cancel:
                self._cancel[session] = threading.Event()
            return self._cancel[session]

    def params(
        self,
        run, prompt, negative_prompt, class_label, negative_class, seed, steps, sampler, guidance,
        guidance_kind, size,
    ) -> GenerationParams:  # fmt: skip
        """The settings column as a `GenerationParams` (seed -1 drawn here); bad values give ValueError."""
        info = self.studio.infos[self.studio.name_of(run)]
        text = info.conditioning == "text"
        try:
            seed = int(seed if seed is not None else RANDOM_SEED)
            steps, guidance = int(steps), float(guidance)
            side = None if size in (None, "", info.image_size) else int(size)  # None: the trained size
        except (TypeError, ValueError):
            raise ValueError(
                f"seed, steps and size must be whole numbers, got {seed!r}, {steps!r} and {size!r}"
            ) from None
        return GenerationParams(
            run=run,
            prompt=(prompt or "") if text else None,
            negative_prompt=(negative_prompt or None) if text else None,
            class_label=None if text or class_label in (None, "", NO_CLASS) else str(class_label),
            negative_class=None if text or negative_class in (None, "", NO_CLASS) else str(negative_class),
            seed=secrets.randbelow(2**31) if seed == RANDOM_SEED else seed,
            steps=steps,
            sampler=str(sampler),
            guidance=guidance,
            guidance_kind=guidance_kind or "cfg",
            height=side,
            width=side,
        )

    # --------------------------------------------------------------------------------- handlers
    def generate(self, gr, settings: list[Any], count, request, progress) -> Iterator[tuple]:
        """Generator handler: yields (preview, gallery, status, last seed) as the sampling goes."""
        try:
            params = self.studio.check(self.params(*settings))
            count = int(count)
        except Exception as e:
            raise page_error(gr, e) from None
        cancel = self.cancel_event(request.session_hash, fresh=True)
        messages: queue.Queue = queue.Queue()

        def work() -> None:
            try:
                self.studio.generate(
                    params,
                    count,
                    cancel,
                    on_step=lambda k, step, preview: messages.put(("step", k, step, preview)),
                    on_image=lambda path: messages.put(("image", path)),
                )
            except BaseException as e:  # handed to the handler, which shows it
                messages.put(("error", e))
            else:
                messages.put(("done",))

        worker = threading.Thread(target=work, name="latentdiff-sampling", daemon=True)
        worker.start()
        images: list[tuple[str, str]] = []
        total = count * params.steps
        progress((0, total), desc="sampling", unit="steps")
        try:
            while True:
                kind, *rest = messages.get()
                if kind == "step":
                    k, step, preview = rest
                    progress((k * params.steps + step, total), desc=f"image {k + 1} of {count}", unit="steps")
                    if preview is not None:
                        yield preview, gr.skip(), gr.skip(), gr.skip()
                elif kind == "image":
                    path = rest[0]
                    images.append((str(path), f"seed {params.seed + len(images)}"))
                    yield gr.skip(), list(images), f"saved {path.name}", params.seed
                elif kind == "done":
                    last = images[-1][0] if images else None  # the preview ends on the finished image
                    yield last, list(images), self._made(images, params, count), params.seed
                    return
                else:
                    err = rest[0]
                    if isinstance(err, Cancelled):
                        kept = f"; {len(images)} image(s) finished before are kept" if images else ""
                        gr.Warning(f"Cancelled after step {err.step} of {err.steps}{kept}")
                        yield (
                            None,
                            list(images),
                            f"cancelled after step {err.step} of {err.steps}{kept}",
                            (params.seed),
                        )
                        return
                    raise page_error(gr, err)
        finally:  # the page closed or the request ended: stop the sampling, free the slot only after it
            cancel.set()
            worker.join()

    @staticmethod
    def _made(images: list, params: GenerationParams, count: int) -> str:
        seeds = f"seed {params.seed}" if count == 1 else f"seeds {params.seed}–{params.seed + count - 1}"
        return f"{len(images)} image(s), {seeds}, {params.steps} steps, {params.sampler}"

    def cancel(self, request) -> None:
        """Sets the session's cancel switch. It writes nothing on the page: the sampling's own last message
        ("cancelled after step k") says it stopped, and an answer of this handler could reach the page after
        that message and stay there for good ("cancelling…" forever, seen under load)."""
        self.cancel_event(request.session_hash).set()

    def load_settings(self, gr, file) -> tuple:
        """A PNG's parameters back into the settings column (and the edit tabs' own values)."""
        if file is None:
            return (gr.skip(),) * 15
        path = Path(file if isinstance(file, str) else file.name)
        try:
            params = read_generation_params(path)
        except Exception as e:
            raise page_error(gr, e) from None
        try:
            run = self.studio.name_of(params.run)
        except ValueError:
            gr.Warning(f"{path.name} was made with the run {params.run}, which this server does not serve")
            run = gr.skip()
        size = (params.height or self.studio.infos[run].image_size) if isinstance(run, str) else gr.skip()
        message = f"settings of {path.name} restored ({params.mode}, latentdiff {params.version})"
        return (
            run,
            params.prompt or "",
            params.negative_prompt or "",
            params.class_label or NO_CLASS,
            params.negative_class or NO_CLASS,
            params.seed,
            params.steps,
            params.sampler,
            params.guidance,
            params.guidance_kind,
            size,
            params.strength if params.strength is not None else gr.skip(),
            params.seed_b if params.seed_b is not None else gr.skip(),
            params.prompt_b if params.prompt_b is not None else gr.skip(),
            message,
        )

    def img2img(self, gr, settings: list[Any], image, strength) -> tuple:
        try:
            if image is None:
                raise ValueError("upload an image to edit first")
            params = self.params(*settings)
            params.strength = float(strength)
            path = self.studio.img2img(params, image)
        except Exception as e:
            raise page_error(gr, e) from None
        return str(path), f"saved {path.name}"

    def inpaint(self, gr, settings: list[Any], original, editor, keep_unmasked) -> tuple:
        try:
            background, layer = editor_image_and_mask(editor)
            if original is not None:  # the uploaded pixels, fitted to the editor's grid if they differ
                background = (
                    original if original.size == background.size else original.resize(background.size)
                )
            params = self.params(*settings)
            run = self.studio.name_of(params.run)
            mask = self.studio.mask_from_layer(run, layer, background.size)
            path, _ = self.studio.inpaint(params, background, mask, keep_unmasked=bool(keep_unmasked))
        except Exception as e:
            raise page_error(gr, e) from None
        mask_png = path.with_name(path.stem + "-mask.png")  # written beside the result by the studio
        return str(path), str(mask_png), f"saved {path.name} (with its -input.png and -mask.png)"

    def interpolate(self, gr, settings: list[Any], between, seed_b, prompt_b, frames) -> tuple:
        try:
            params = self.params(*settings)
            if between == PROMPTS:
                path = self.studio.interpolate_prompts(params, str(prompt_b or ""), int(frames))
            else:
                path = self.studio.interpolate(params, int(seed_b), int(frames))
        except Exception as e:
            raise page_error(gr, e) from None
        return str(path), f"saved {path.name}"

    def run_changed(self, gr, run) -> tuple:
        """Show the controls the chosen run takes: prompts for text, classes for class-conditional."""
        info = self.studio.infos[self.studio.name_of(run)]
        text, classes = info.conditioning == "text", info.conditioning == "class"
        choices = [NO_CLASS, *info.class_names]
        return (
            info.describe(),
            gr.update(visible=text),
            gr.update(visible=text),
            gr.update(visible=classes, choices=choices, value=NO_CLASS),
            gr.update(visible=classes, choices=choices, value=NO_CLASS),
            gr.update(choices=_size_choices(info), value=info.image_size),
            gr.update(visible=info.has_guide, value="auto" if info.has_guide else "cfg"),
            gr.update(visible=text, value=SEEDS),
            gr.update(visible=text),
            gr.update(
                canvas_size=(info.image_size, info.image_size), brush=_brush(gr, info.image_size), value=None
            ),
        )


def editor_image_and_mask(editor: Any):
    """(background, painted layer) of an ImageEditor value; the layer is the union of all the layers
    painted (alpha = painted). ValueError when nothing was uploaded."""
    from PIL import Image

    if not editor or editor.get("background") is None:
        raise ValueError(
            "upload an image to inpaint first, then paint the region to regenerate"
        )
    background = editor["background"]
    layers = [layer for layer in editor.get("layers") or [] if layer is not None]
    if not layers:
        raise ValueError("paint the region to regenerate over the image (no mask was painted)")
    mask = Image.new("L", layers[0].size, 0)
    for layer in layers:
        if layer.size != mask.size:
            raise ValueError(f"the mask layers differ in size: {layer.size} and {mask.size}")
        alpha = np.asarray(layer.convert("RGBA").getchannel("A"))
        mask = Image.fromarray(np.maximum(np.asarray(mask), alpha))
    return background.convert("RGBA") if background.mode == "P" else background, mask


def _size_choices(info) -> list[tuple[str, int]]:
    """The image sizes offered for a run: (label, side in pixels), the trained size first."""
    return [(f"{s}×{s} px" + (" (trained)" if s == info.image_size else ""), s) for s in info.sizes]


def _brush(gr, image_size: int):
    """A brush whose radius is 1/16 of the model's image side (at least one pixel)."""
    return gr.Brush(colors=["#ff3030"], color_mode="fixed", default_size=max(1, image_size // 16))


def build_page(studio: Studio):
    """The gr.Blocks of the page over `studio` (not launched)."""
    gr = require_gradio()
    page = Page(studio)
    names = list(studio.infos)
    first = studio.infos[names[0]]
    class_choices = [NO_CLASS, *first.class_names]
    with gr.Blocks(title="latentdiff") as demo:
        gr.Markdown("## latentdiff — generate and edit with a trained latent diffusion model")
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=320):
                run = gr.Dropdown(names, value=names[0], label="Run", visible=len(names) > 1, elem_id="run")
                run_info = gr.Markdown(first.describe())
                text, classes = first.conditioning == "text", first.conditioning == "class"
                prompt = gr.Textbox(label="Prompt", visible=text, lines=2, elem_id="prompt")
                negative_prompt = gr.Textbox(label="Negative prompt", visible=text, elem_id="negative-prompt")
                class_label = gr.Dropdown(
                    class_choices, value=NO_CLASS, label="Class", visible=classes, elem_id="class"
                )
                negative_class = gr.Dropdown(
                    class_choices,
                    value=NO_CLASS,
                    label="Negative class (guidance steers away from it)",
                    visible=classes,
                    elem_id="negative-class",
                )
                with gr.Row():
                    seed = gr.Number(
                        RANDOM_SEED, label="Seed (-1 = random)", precision=0, minimum=-1, elem_id="seed"
                    )
                    random_seed = gr.Button("🎲 random", size="sm", elem_id="random-seed")
                    reuse_seed = gr.Button("♻ reuse last", size="sm", elem_id="reuse-seed")
                steps = gr.Slider(1, MAX_STEPS, value=20, step=1, label="Steps", elem_id="steps")
                sampler = gr.Dropdown(list(SAMPLERS), value="dpmpp_2m", label="Sampler", elem_id="sampler")
                guidance = gr.Slider(
                    0, 10, value=1, step=0.1, label="Guidance scale (1 = off)", elem_id="guidance"
                )
                guidance_kind = gr.Radio(
                    GUIDANCE_KINDS,
                    value="auto" if first.has_guide else "cfg",
                    label="Guidance contrasts the model with",
                    info="autoguidance: the run's weaker guide model (the run's evaluation uses it, w = 2); "
                    "classifier-free: the model without its class or prompt (or with the negative one)",
                    visible=first.has_guide,
                    elem_id="guidance-kind",
                )
                size = gr.Dropdown(
                    _size_choices(first),
                    value=first.image_size,
                    label="Image size (Generate and Interpolate; edits keep the input's)",
                    elem_id="size",
                )
                load_png = gr.File(
                    label="Drop a PNG made here to restore its settings",
                    file_types=[".png"],
                    elem_id="load-png",
                )
                settings_status = gr.Markdown(elem_id="settings-status")
            with gr.Column(scale=3):
                with gr.Tabs():
                    with gr.Tab("Generate", id="generate-tab"):
                        count = gr.Slider(
                            1, MAX_IMAGES, value=1, step=1, label="Number of images", elem_id="count"
                        )
                        with gr.Row():
                            generate = gr.Button("Generate", variant="primary", elem_id="generate")
                            cancel = gr.Button("Cancel", variant="stop", elem_id="cancel")
                        with gr.Row():
                            preview = gr.Image(
                                label="Preview: the current estimate x̂0",
                                interactive=False,
                                elem_id="preview",
                                height=256,
                            )
                            gallery = gr.Gallery(
                                label="Results",
                                columns=4,
                                height=256,
                                object_fit="contain",
                                elem_id="gallery",
                            )
                        status = gr.Markdown(elem_id="status")
                    with gr.Tab("img2img", id="img2img-tab"):
                        with gr.Row():
                            img2img_input = gr.Image(
                                type="filepath",
                                sources=["upload"],
                                label="Input image",
                                elem_id="img2img-input",
                            )
                            img2img_result = gr.Image(
                                label="Result", interactive=False, elem_id="img2img-result"
                            )
                        strength = gr.Slider(
                            0,
                            1,
                            value=0.6,
                            step=0.05,
                            label="Strength (0 = keep, 1 = ignore the input)",
                            elem_id="strength",
                        )
                        img2img_run = gr.Button("Run img2img", variant="primary", elem_id="img2img-run")
                    with gr.Tab("Inpaint", id="inpaint-tab"):
                        # the canvas is the model's grid: an upload is fitted into it, so the mask is painted
                        # on the pixels the model sees, and the brush is sized to that grid
                        # the pixels come from this upload: the editor's canvas hands its background back
                        # scaled (~0.8x in Gradio 6.31), so it only carries the painted mask
                        inpaint_input = gr.Image(
                            type="pil",
                            sources=["upload"],
                            label="Image to inpaint (kept as uploaded)",
                            elem_id="inpaint-input",
                            height=200,
                        )
                        editor = gr.ImageEditor(
                            type="pil",
                            sources=["upload"],
                            label="Paint the region to regenerate",
                            brush=_brush(gr, first.image_size),
                            transforms=(),
                            canvas_size=(first.image_size, first.image_size),
                            fixed_canvas=True,
                            format="png",
                            elem_id="inpaint-editor",
                        )
                        keep_unmasked = gr.Checkbox(
                            True,
                            label="Keep the unpainted pixels exactly (paste the input back)",
                            elem_id="keep-unmasked",
                        )
                        inpaint_run = gr.Button("Inpaint", variant="primary", elem_id="inpaint-run")
                        with gr.Row():
                            inpaint_result = gr.Image(
                                label="Result", interactive=False, elem_id="inpaint-result", height=200
                            )
                            inpaint_mask = gr.Image(
                                label="Mask used (white = regenerated)",
                                interactive=False,
                                elem_id="inpaint-mask",
                                height=200,
                            )
                    with gr.Tab("Interpolate", id="interp-tab"):
                        between = gr.Radio(
                            [SEEDS, PROMPTS],
                            value=SEEDS,
                            label="Between (two prompts: prompt A is the prompt above, at its seed)",
                            visible=text,
                            elem_id="interp-between",
                        )
                        prompt_b = gr.Textbox(label="Prompt B", visible=text, elem_id="interp-prompt-b")
                        with gr.Row():
                            seed_b = gr.Number(
                                1,
                                label="Seed B (seed A is the seed on the left)",
                                precision=0,
                                minimum=0,
                                elem_id="interp-seed-b",
                            )
                            frames = gr.Slider(
                                2, MAX_FRAMES, value=8, step=1, label="Images", elem_id="interp-frames"
                            )
                        interp_run = gr.Button("Interpolate", variant="primary", elem_id="interp-run")
                        interp_result = gr.Image(label="Strip", interactive=False, elem_id="interp-result")
                edit_status = gr.Markdown(elem_id="edit-status")
        last_seed = gr.State(None)
        settings = [
            run, prompt, negative_prompt, class_label, negative_class, seed, steps, sampler, guidance,
            guidance_kind, size,
        ]  # fmt: skip

        # explicit parameters: Gradio passes gr.Request and gr.Progress by the hints of named parameters
        def on_generate(
            run, prompt, negative_prompt, class_label, negative_class, seed, steps, sampler, guidance,
            guidance_kind, size, count, request: gr.Request, progress=gr.Progress(),  # noqa: B008 - Gradio's idiom
        ):  # fmt: skip
            settings = [run, prompt, negative_prompt, class_label, negative_class, seed, steps, sampler]
            yield from page.generate(gr, [*settings, guidance, guidance_kind, size], count, request, progress)

        def on_cancel(request: gr.Request) -> None:
            page.cancel(request)

        sampling = dict(concurrency_id="sampling", concurrency_limit=1)
        generate.click(on_generate, [*settings, count], [preview, gallery, status, last_seed], **sampling)
        cancel.click(on_cancel, None, None, concurrency_limit=None)
        random_seed.click(lambda: RANDOM_SEED, None, seed, queue=False)
        reuse_seed.click(lambda last: RANDOM_SEED if last is None else last, last_seed, seed, queue=False)
        load_png.upload(
            lambda f: page.load_settings(gr, f),
            load_png,
            [*settings, strength, seed_b, prompt_b, settings_status],
        ).then(
            lambda: None, None, load_png, queue=False
        )  # empty again (also after an error) for the next PNG
        img2img_run.click(
            lambda *v: page.img2img(gr, list(v[:-2]), v[-2], v[-1]),
            [*settings, img2img_input, strength],
            [img2img_result, edit_status],
            **sampling,
        )
        inpaint_input.upload(
            lambda img: {"background": img, "layers": [], "composite": img}, [inpaint_input], [editor]
        )
        inpaint_run.click(
            lambda *v: page.inpaint(gr, list(v[:-3]), v[-3], v[-2], v[-1]),
            [*settings, inpaint_input, editor, keep_unmasked],
            [inpaint_result, inpaint_mask, edit_status],
            **sampling,
        )
        interp_run.click(
            lambda *v: page.interpolate(gr, list(v[:-4]), *v[-4:]),
            [*settings, between, seed_b, prompt_b, frames],
            [interp_result, edit_status],
            **sampling,
        )
        run.change(
            lambda r: page.run_changed(gr, r),
            run,
            [run_info, prompt, negative_prompt, class_label, negative_class, size, guidance_kind, between]
            + [prompt_b, editor],
        )
    return demo
