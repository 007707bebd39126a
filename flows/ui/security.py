"""Who may use the page, and which writes it takes.

- Off loopback the page needs ``MLC_UI__TOKEN``: it refuses to start without one, and every
  request but ``/healthz`` must carry it (``Authorization: Bearer``, the cookie that
  ``?token=`` sets once, or ``?token=`` itself).
- On loopback without a token it answers only requests addressed to a loopback name, so a
  foreign site cannot reach it by pointing its own name at 127.0.0.1 (DNS rebinding).
- A write (any method but GET/HEAD/OPTIONS) with an ``Origin`` or ``Sec-Fetch-Site`` of
  another site is refused, JSON writes must be ``application/json`` (a cross-site form cannot
  send that without a CORS preflight, which this server never grants), and form posts carry
  the CSRF token of the page that rendered them.
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from mlc_core.errors import MlcError

TOKEN_COOKIE = "mlc_ui_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OPEN_PATHS = frozenset({"/healthz"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve beyond this machine without a token.

    Raises:
        MlcError: ``host`` is not a loopback address and no token is set.
    """
    if not is_loopback(host) and not token:
        raise MlcError(
            f"mlc ui binds {host}, which other machines can reach; set MLC_UI__TOKEN to a "
            "long random secret first (every request but /healthz must then carry it), or "
            "bind 127.0.0.1"
        )


def refusal(request: Request, token: str | None) -> Response | None:
    """The response that refuses ``request``, or None when it may go on."""
    if request.url.path in OPEN_PATHS:
        return None
    if token:
        denied = _token_refusal(request, token)
        if denied is not None:
            return denied
    elif not is_loopback(request.url.hostname or ""):
        return _refuse(
            request, 400, "this page answers only requests addressed to 127.0.0.1 or localhost"
        )
    if request.method in SAFE_METHODS:
        return None
    if _foreign(request):
        return _refuse(request, 403, "writes are taken only from this page's own origin")
    if request.url.path.startswith("/api/"):
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return _refuse(request, 415, "the API takes writes only as application/json")
    return None


def _token_refusal(request: Request, token: str) -> Response | None:
    given = request.query_params.get("token")
    if given is not None and _same(given, token):
        # Once, from a link: the token moves to a cookie and out of the address bar.
        rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        target = request.url.path + ("?" + urlencode(rest) if rest else "")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response
    authorization = request.headers.get("authorization", "")
    bearer = authorization[7:] if authorization.lower().startswith("bearer ") else None
    for candidate in (bearer, request.cookies.get(TOKEN_COOKIE)):
        if candidate is not None and _same(candidate, token):
            return None
    return _refuse(
        request,
        401,
        "this page needs the token in MLC_UI__TOKEN: open it once with ?token=..., or send "
        "Authorization: Bearer ...",
    )


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def _foreign(request: Request) -> bool:
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return True
    origin = request.headers.get("origin")
    if origin is None:
        return False
    own = request.headers.get("host", "")
    return origin == "null" or urlsplit(origin).netloc != own


def csrf_valid(given: str | None, expected: str) -> bool:
    return given is not None and _same(given, expected)


def _refuse(request: Request, status: int, reason: str) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": reason}, status_code=status)
    return Response(reason + "\n", status_code=status, media_type="text/plain")
