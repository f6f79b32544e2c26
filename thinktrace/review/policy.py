"""Review policies: a rule applied to a whole run through the review app's HTTP endpoints (the same ones the page
uses), as a scripted reviewer. `thinktrace review RUN_DIR --policy NAME` starts the app on a free loopback port,
applies the policy and stops.

- `reject-label-leaks`: reject every trace whose rationale states its own label (thinktrace.leak.states_label: the
  `states_label` filter of the page), accept every other one.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Callable

from thinktrace.review.records import ReviewError


def http_json(base: str, path: str, body: dict | None = None, timeout: float = 60.0) -> dict:
    """GET (or POST `body`) a JSON endpoint of the review app; a 4xx/5xx is a ReviewError with the app's message."""
    import urllib.error

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base.rstrip("/") + path, data=data, method="POST" if body is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        try:
            message = json.loads(err.read().decode("utf-8")).get("error")
        except ValueError:
            message = None
        raise ReviewError(f"{req.method} {path}: HTTP {err.code}: {message or err.reason}") from None


def reject_label_leaks(base: str, reviewer: str) -> dict:
    q = urllib.parse.urlencode({"reviewer": reviewer})
    counts = {"rejected": 0, "accepted": 0}
    for row in http_json(base, f"/api/traces?{q}")["traces"]:
        leak = row["states_label"]
        reason = "the rationale states its label" if leak else "no label stated"
        http_json(base, "/api/reviews", {"trace": row["id"], "action": "reject" if leak else "accept",
                                         "reviewer": reviewer, "reason": reason,
                                         "source": "policy:reject-label-leaks"})
        counts["rejected" if leak else "accepted"] += 1
    return counts


POLICIES: dict[str, Callable[[str, str], dict]] = {"reject-label-leaks": reject_label_leaks}
