"""Content-Security-Policy on every response of the portal (Django 5.2 has none of its own).

Pages load everything from the portal's own origin: scripts and styles only as files under /static/ — no
inline `<script>`, no `on…=` handler attributes, no `<style>` blocks and no `style=""` attributes (a script
that sizes something sets `element.style`, which the policy allows) — images also as `data:` URIs, no
plugins, no `<base>`, forms posting only back to the portal, and no framing by anyone. Whatever else the
portal answers (JSON, downloads, static files) is never a document that needs to load anything, so it gets
`default-src 'none'`: a JSON answer or a downloaded file that a browser is tricked into rendering runs nothing.

A view that needs more widens its own pages' policy with `allow(...)`. Only the API docs do: Redoc writes its
styles inline and runs its search in a `blob:` worker (its scripts still come from the portal only).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.conf import settings

HEADER = "Content-Security-Policy"
PAGE_POLICY: dict[str, tuple[str, ...]] = {
    "default-src": ("'self'",),
    "script-src": ("'self'",),
    "style-src": ("'self'",),
    "img-src": ("'self'", "data:"),
    "font-src": ("'self'",),
    "connect-src": ("'self'",),
    "object-src": ("'none'",),
    "base-uri": ("'self'",),
    "form-action": ("'self'",),
    "frame-ancestors": ("'none'",),
}
OTHER_POLICY = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"


def page_policy(extra: dict[str, tuple[str, ...]] | None = None) -> str:
    directives = dict(PAGE_POLICY)
    for name, sources in (extra or {}).items():
        # A directive the page policy does not name falls back to default-src: widen that, not replace it.
        base = directives.get(name, directives["default-src"])
        directives[name] = base + tuple(s for s in sources if s not in base)
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())


def allow(**directives: str) -> Callable:
    """View decorator: widen the page policy of this view's answers, e.g. `allow(worker_src="blob:")`."""
    extra = {name.replace("_", "-"): tuple(value.split()) for name, value in directives.items()}

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            response = view(request, *args, **kwargs)
            response.csp_extra = extra
            return response

        return wrapped

    return decorator


def _is_page(response) -> bool:
    return (response.get("Content-Type", "").startswith("text/html")
            and not response.get("Content-Disposition", "").startswith("attachment"))


class ContentSecurityPolicyMiddleware:
    """Sets the header on every answer that has none yet (a view may set its own)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if HEADER in response:
            return response
        if _is_page(response):
            if settings.DEBUG and response.status_code >= 400:
                # With DEBUG (development only) error pages are Django's technical pages, whose styles and
                # scripts are inline: the policy would leave the traceback unreadable.
                return response
            response[HEADER] = page_policy(getattr(response, "csp_extra", None))
        else:
            response[HEADER] = OTHER_POLICY
        return response
