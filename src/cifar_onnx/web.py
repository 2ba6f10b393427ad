"""The page: GET / shows the form; POST /classify answers a fragment to HTMX, a whole page otherwise;
POST /explain-view answers the heat-map fragment that the "Where did it look?" toggle swaps in.

Without JavaScript the form is an ordinary multipart POST and the result comes back as a full
page; with HTMX only the result section is swapped in. Errors are shown in the page.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie, UploadFile
from litestar.di import NamedDependency
from litestar.params import Body
from litestar.plugins.htmx import HTMXRequest, HTMXTemplate
from litestar.response import Template

from cifar_onnx.classify import Prediction
from cifar_onnx.errors import ErrorBody, ServiceError, error_headers, exception_handlers, image_error, to_error
from cifar_onnx.i18n import LANGUAGES, TEXT, class_name, pick_language
from cifar_onnx.registry import ModelStore
from cifar_onnx.serving import MULTIPART, Service, explain_upload, read_upload, served


@dataclass
class ClassifyForm:
    # The file picker and the camera button both send `files`; an unused one sends an empty part
    # with no filename, which the multipart parser hands over as a string.
    files: Any = None  # UploadFile, str, or a list of them (msgspec takes no union of these)
    model: str | None = None
    lang: str | None = None
    label: str | None = None  # explain-view only: the class to explain
    index: int | None = None  # explain-view only: which of the photos


def chosen_files(form: ClassifyForm) -> list[UploadFile]:
    uploads = form.files if isinstance(form.files, list) else [form.files]
    return [u for u in uploads if isinstance(u, UploadFile) and u.filename]


def page_context(store: ModelStore, lang: str, **extra: Any) -> dict[str, Any]:
    models = []
    if store.ready:
        for m in store.models.values():
            accuracy = m.metadata.get("accuracy", {}).get("test_int8")
            models.append({"name": m.name, "title": m.metadata.get("title", m.name), "accuracy": accuracy,
                           "default": m.name == store.default_name})  # fmt: skip
    return {"lang": lang, "t": TEXT[lang], "languages": LANGUAGES, "models": models,
            "class_name": lambda label: class_name(label, lang), "cards": None, "error": None, **extra}  # fmt: skip


def render(
    request: HTMXRequest, context: dict[str, Any], status: int = 200, fragment: str = "_result.html"
) -> Template:
    """The fragment for HTMX, the whole page for a plain form post; the language is remembered."""
    cookie = Cookie(key="lang", value=context["lang"], max_age=365 * 24 * 3600, samesite="lax")
    if request.htmx:
        return HTMXTemplate(template_name=fragment, context=context, status_code=status, cookies=[cookie])
    return Template(template_name="index.html", context=context, status_code=status, cookies=[cookie])


def language(request: Request, form_lang: str | None = None) -> str:
    return pick_language(form_lang or request.query_params.get("lang"), request.cookies.get("lang"),
                         request.headers.get("accept-language"))  # fmt: skip


def page_error(request: HTMXRequest, exc: Exception, body: ErrorBody) -> Response:
    """Errors on page routes raised before the handler (such as 413), by the per-type handlers."""
    return error_page(request, request.app.state.store, language(request), exc, body=body)


def error_page(request: HTMXRequest, store: ModelStore, lang: str, exc: Exception, fragment: str = "_result.html",
               body: ErrorBody | None = None) -> Template:  # fmt: skip
    """An error shown in the page (or the fragment HTMX asked for), in the page's language, with
    the real status and the headers it requires (Retry-After on a 503)."""
    body = body or to_error(exc, request)
    response = render(request, page_context(store, lang, error=_error_view(body, lang)), body.status, fragment)
    response.headers.update(error_headers(exc, body.status))
    return response


def _error_view(body: ErrorBody, lang: str) -> dict[str, str]:
    text = TEXT[lang]
    friendly = text.get(f"err_{body.error}", text["err_other"])
    return {"summary": friendly, "detail": body.message if lang == "en" else "", "code": body.error}


class PageController(Controller):
    include_in_schema = False
    exception_handlers = exception_handlers(page_error)

    @get("/")
    async def index(self, request: HTMXRequest, store: NamedDependency[ModelStore]) -> Template:
        return render(request, page_context(store, language(request)))

    @post("/classify", status_code=200)
    async def classify(self, request: HTMXRequest, data: Annotated[ClassifyForm, Body(media_type=MULTIPART)],
                       service: NamedDependency[Service]) -> Template:  # fmt: skip
        lang = language(request, data.lang)
        store, settings, queue = service.store, service.settings, service.queue
        try:
            chosen = served(store, data.model or None)
            uploads = chosen_files(data)
            if not uploads:
                raise ServiceError(400, "no_file", "Choose an image file first.")
            if len(uploads) > settings.max_batch_files:
                raise ServiceError(400, "too_many_files",
                                   f"{len(uploads)} files sent; the limit is {settings.max_batch_files} at once.")  # fmt: skip
            files = [(u.filename, await read_upload(u, settings)) for u in uploads]
            answers = await queue.classify_each(files, chosen, 5, settings.max_pixels)
        except Exception as exc:
            return error_page(request, store, lang, exc)
        cards = [{"index": i, "filename": name, "result": a} if isinstance(a, Prediction)
                 else {"index": i, "filename": name, "error": _error_view(image_error(a), lang)}
                 for i, ((name, _), a) in enumerate(zip(files, answers, strict=False))]  # fmt: skip
        # All refused: the first refusal's status (a single bad photo answers as it always did).
        status = 200 if any("result" in c for c in cards) else image_error(answers[0]).status
        return render(request, page_context(store, lang, cards=cards, selected=chosen.name), status)

    @post("/explain-view", status_code=200)
    async def explain_view(self, request: HTMXRequest, data: Annotated[ClassifyForm, Body(media_type=MULTIPART)],
                           service: NamedDependency[Service]) -> Template:  # fmt: skip
        """The heat map as an <img> with a data: URL, for the toggle under a result."""
        lang = language(request, data.lang)
        store, settings, queue = service.store, service.settings, service.queue
        try:
            uploads = chosen_files(data)
            index = data.index or 0
            if not 0 <= index < len(uploads):
                raise ServiceError(400, "no_file", "Choose an image file first.")
            found = await explain_upload(queue, uploads[index], served(store, data.model or None), data.label or None,
                                         settings)  # fmt: skip
        except Exception as exc:
            return error_page(request, store, lang, exc, fragment="_explanation.html")
        image = "data:image/png;base64," + base64.b64encode(found.png).decode("ascii")
        return render(request, page_context(store, lang, explanation={"src": image, "label": found.label}),
                      fragment="_explanation.html")  # fmt: skip
