"""The review web app (FastAPI on uvicorn, bound to 127.0.0.1, no account): one page (page.html) over JSON
endpoints, and the same endpoints for scripts (a review policy, an import):

    GET  /api/summary?reviewer=R           labels, strategies, counts of R's reviewed set, reviewers, their α
    GET  /api/traces?reviewer=R&label=&strategy=&cut=&states_label=&disagreement=&status=
                                           the traces by label and item as R sees them, filtered
    GET  /api/traces/{id}?reviewer=R       one trace (id = key|strategy|attempt)
    POST /api/reviews                      {trace, action: accept|reject|edit, reviewer, reason, rationale?}
    GET  /api/reviews                      every review line (reviews.jsonl)
    GET  /api/export/labelstudio           the traces as a Label Studio task file
    POST /api/import/labelstudio?reviewer=R  a Label Studio export: its choices become R's reviews

Bad input is an HTTP 4xx whose JSON `error` is one line (unknown trace: 404; a review that does not fit: 422; the
journal tampered with while the app runs: 409); nothing is written then. Each request sees the journal as it is
on disk (another process may append to it). An edit is read by the blind judge before its line is written."""

from __future__ import annotations

import html
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.middleware.trustedhost import TrustedHostMiddleware
from pydantic import BaseModel, Field

from thinktrace.review.records import Action, JudgeUnavailable, ReviewError
from thinktrace.review.store import ReviewStore


class ReviewIn(BaseModel):
    trace: str
    action: Action
    reviewer: str = Field(min_length=1, max_length=100)
    reason: str = Field("", max_length=2000)
    rationale: str | None = Field(None, max_length=20000)
    source: str = Field("api", max_length=100)


def _flag(value: str | None) -> bool | None:
    if value is None or value == "":
        return None
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise ReviewError(f"a filter flag is true or false, not {value!r}")


#: the Host a request may name: the loopback the app is bound to (a page elsewhere that resolves its own name to
#: 127.0.0.1 gets a 400, not the reviews)
LOCAL_HOSTS = ["127.0.0.1", "localhost"]


def create_app(store: ReviewStore, judge=None, reviewer: str = "reviewer") -> FastAPI:
    """The app over `store`; `judge` re-checks edits (thinktrace.review.judge); `reviewer`: the page's default.
    Only loopback Host names are served, and a POST must send JSON (a cross-site form post cannot)."""
    app = FastAPI(title="thinktrace review", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=LOCAL_HOSTS)
    app.state.judge = judge
    page = resources.files("thinktrace.review").joinpath("page.html").read_text(encoding="utf-8")

    @app.exception_handler(ReviewError)
    async def _review_error(request: Request, err: ReviewError):
        status = 503 if isinstance(err, JudgeUnavailable) else 404 if str(err).startswith("unknown trace") else 422
        return JSONResponse({"error": str(err)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError):
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "request"
        return JSONResponse({"error": f"{where}: {first.get('msg')}"}, status_code=422)

    @app.middleware("http")
    async def _fresh(request: Request, call_next):
        """Every request sees the journal as it is on disk (another process may have appended to it)."""
        if request.method == "POST" and \
                request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse({"error": "a POST sends JSON (Content-Type: application/json)"}, status_code=415)
        try:
            store.refresh()
        except ReviewError as err:
            return JSONResponse({"error": str(err)}, status_code=409)
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    def index():
        return HTMLResponse(page.replace("__REVIEWER__", html.escape(reviewer, quote=True)))

    @app.get("/api/summary")
    def summary(reviewer: str | None = None):
        return store.summary(reviewer or store.primary())

    @app.get("/api/traces")
    def traces(reviewer: str | None = None, label: str | None = None, strategy: str | None = None,
               cut: str | None = None, states_label: str | None = None, disagreement: str | None = None,
               status: str | None = None):
        if label and label not in store.label_set.labels:
            raise ReviewError(f"label {label!r} is not one of {list(store.label_set.labels)}")
        return {"traces": store.rows(reviewer, label=label or None, strategy=strategy or None, cut=_flag(cut),
                                     states=_flag(states_label), disagreement=_flag(disagreement),
                                     status=status or None)}

    @app.get("/api/traces/{trace:path}")
    def one(trace: str, reviewer: str | None = None):
        return store.row(store.trace(trace), reviewer)

    @app.post("/api/reviews")
    def review(body: ReviewIn):
        r = store.new_review(body.trace, body.action, body.reviewer, reason=body.reason, source=body.source,
                             rationale=body.rationale, judge=judge)
        return {"review": r.model_dump(mode="json"), "counts": r.counts,
                "trace": store.row(store.trace(body.trace), body.reviewer)}

    @app.get("/api/reviews")
    def reviews(reviewer: str | None = None):
        return {"reviews": [r.model_dump(mode="json") for r in store.reviews
                            if reviewer is None or r.reviewer == reviewer]}

    @app.get("/api/export/labelstudio")
    def export():
        from thinktrace.review.exchange import to_label_studio

        return to_label_studio(store)

    @app.post("/api/import/labelstudio")
    async def import_(request: Request, reviewer: str | None = None):
        from thinktrace.review.exchange import from_label_studio

        try:
            data = await request.json()
        except ValueError:
            raise ReviewError("the body is not JSON (a Label Studio JSON export)") from None
        return from_label_studio(store, data, reviewer=reviewer, judge=judge)

    return app
