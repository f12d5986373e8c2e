"""Response headers Django has no setting for, and the endpoint browsers report CSP
violations to."""

from __future__ import annotations

import json
import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

log = logging.getLogger("csp")

MAX_REPORT_BYTES = 8 * 1024


class PermissionsPolicyMiddleware(MiddlewareMixin):
    """Sync and async (MiddlewareMixin): the Bot API's async stack uses it too."""

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        response.headers.setdefault("Permissions-Policy", settings.PERMISSIONS_POLICY)
        return response


@csrf_exempt
@require_POST
def csp_report(request: HttpRequest) -> HttpResponse:
    """A browser's `csp-report`: logged (directive and blocked origin only, never the sample
    of the page's text), so an operator sees what a policy change broke."""
    if len(request.body) > MAX_REPORT_BYTES:
        return HttpResponse(status=413)
    try:
        report = json.loads(request.body).get("csp-report", {})
    except (ValueError, AttributeError):
        return HttpResponse(status=400)
    if not isinstance(report, dict):
        return HttpResponse(status=400)
    blocked = str(report.get("blocked-uri", ""))[:200].split("?", 1)[0]
    log.warning(
        "csp violation",
        extra={
            "directive": str(report.get("violated-directive", ""))[:100],
            "blocked": blocked,
            "page": str(report.get("document-uri", ""))[:200].split("?", 1)[0],
        },
    )
    return HttpResponse(status=204)
