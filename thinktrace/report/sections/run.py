"""The parts of a run report about the run itself: header, status banner, data, LM calls, cost."""

from __future__ import annotations

from thinktrace.report.flags import collapse_flag
from thinktrace.report.model import Block, Bullets, Details, Strong, Table, Text
from thinktrace.runview import RunView


def status_banner(metrics: dict) -> list[Block]:
    """Warnings at the top of a report whose run is not complete, has variants that failed (answers that do not
    parse) or collapsed (answers almost one label); nothing for a complete run whose variants are all fine."""
    status = metrics.get("status") or {}
    if status.get("state") == "incomplete":
        return [Text([Strong("INCOMPLETE RUN: no agreement numbers."), f" {status.get('message', '')}"], "warn")]
    blocks: list[Block] = []
    failed = status.get("failed_variants") or []
    if status.get("state") == "failures_over_threshold":
        message = status.get("message", "")
        if failed and status.get("stages"):  # the message names the failed variants too: they get their own line
            max_failed = (metrics.get("calls") or {}).get("max_failed", 0)
            message = (f"final failures above calls.max_failed ({max_failed:.0%}): " +
                       ", ".join(f"{k} {v:.1%}" for k, v in status["stages"].items()))
        blocks.append(Text([Strong("Too many failed LM calls:"), f" {message}. The numbers below treat each failed "
                            "call as a missing label; read them with that in mind."], "warn"))
    several = len(metrics.get("splits") or {}) > 1
    if failed:
        rate = status.get("min_parse_rate")
        names = ", ".join(f"{f.get('variant')}" + (f" ({f.get('split')})" if several else "") +
                          f" parsed {f.get('parsed')}/{f.get('n_answers')} answers" for f in failed)
        blocks.append(Text([Strong("Failed variants:"), f" {names}: parse rate below evaluate.min_parse_rate"
                            + (f" ({rate:.0%})" if isinstance(rate, (int, float)) else "") + ". They did not "
                            "work as raters: their agreement numbers stand only on the answers that parsed (the "
                            "confusion matrices' unparsed column shows the rest)."], "warn"))
    collapsed = []
    for split, m in (metrics.get("splits") or {}).items():
        for name, r in ((m or {}).get("raters") or {}).items():
            flag = collapse_flag(r or {})
            if flag:
                gold = (r.get("collapse") or {}).get("gold_top_share")
                collapsed.append(f"{name}{f' ({split})' if several else ''} {flag}"
                                 + (f" (the gold's most frequent label: {gold:.0%})" if gold is not None else ""))
    if collapsed:
        blocks.append(Text([Strong("Collapsed variants:"), f" {'; '.join(collapsed)}. Their answers are far less "
                            "spread than the human labels: a rater that answers (almost) one label."], "warn"))
    return blocks


def header(run: RunView) -> list[Block]:
    spec = run.metrics.get("spec") or {}
    blocks: list[Block] = [*status_banner(run.metrics),
                           Text(f"run folder {run.path.name} · {run.timestamp} · seed {spec.get('seed', '?')}", "note")]
    if spec.get("description"):
        blocks.append(Text(str(spec["description"])))
    status = run.metrics.get("status") or {}
    if status.get("state") == "incomplete":
        blocks.append(Text(["stopped in stage ", Strong(str(status.get("stage"))), f": {status.get('reason')}"]))
    return blocks


def data(run: RunView) -> list[Block]:
    d = run.metrics.get("data") or {}
    stats = d.get("stats") or {}
    rows = [("items", stats.get("items", "?")),
            ("per split", ", ".join(f"{k}: {v}" for k, v in (stats.get("per_split") or {}).items()) or "?"),
            ("label set", f"{', '.join(run.label_set)} ({run.level})"),
            ("human labels per item", d.get("labels_per_item", "n/a")),
            ("annotators", stats.get("annotators", "n/a")),
            ("gold label distribution",
             ", ".join(f"{k}: {v}" for k, v in (stats.get("gold_distribution") or {}).items()) or "n/a"),
            ("ties broken", ties_broken(stats)),
            ("source", stats.get("file") or (run.spec.get("data") or {}).get("source") or "?")]
    blocks: list[Block] = [Table(None, rows)]
    codebook = run.spec.get("codebook")
    if codebook:
        blocks.append(Details("annotation guideline used", str(codebook)))
    return blocks


def ties_broken(stats: dict) -> str:
    """How many gold labels were ties, per kind, and the rule that broke them (`data.tie_break`)."""
    ties = stats.get("ties")
    if isinstance(ties, dict):
        return (f"{stats.get('ties_broken', sum(ties.values()))} of {stats.get('items', '?')} items: "
                f"{ties.get('majority', 0)} majority ties, {ties.get('midpoint', 0)} means/medians halfway between two "
                f"labels; rule `data.tie_break: {stats.get('tie_break', '?')}`")
    if "ties_broken" in stats:  # a run from before data.tie_break: only majority ties were counted
        return (f"{stats['ties_broken']} majority ties (means/medians halfway between two labels not counted in this "
                "older run); rule: lower (ties to the lower / earliest label)")
    return "n/a"


def calls(run: RunView) -> list[Block]:
    """Per stage, units settled / left, final failures, retryable failures journalled, retries inside calls."""
    c = run.metrics.get("calls") or {}
    if not c.get("stages"):
        return [Text("no LM call journal in this run", "note")]
    rows = []
    for name, st in c["stages"].items():
        final = f"{st['final_failures']}" + (f" {st['final_by_type']}" if st.get("final_by_type") else "")
        retry = f"{st['retryable_failures']}" + (f" {st['retryable_by_kind']}" if st.get("retryable_by_kind") else "")
        rows.append([name, st["settled"], st["pending"], final, retry, st["in_call_retries"]])
    return [Table(["stage", "done", "left to do", "final failures", "retryable failures journalled",
                   "retries inside calls"], rows),
            Text("final: the same call would fail again (a 4xx, an empty answer after its retries); it counts as a "
                 "missing label. retryable (connection, 429/5xx, timeout, rejected key): kept in the journal but no "
                 "result; the call is made again on resume. A complete run has nothing left to do and at most "
                 f"{c.get('max_failed', 0):.0%} final failures per stage (`calls.max_failed`).", "note")]


def cost(run: RunView) -> list[Block]:
    c = run.cost()
    rows = [["trace sampling", c["sampling"]["calls"], c["sampling"]["prompt"], c["sampling"]["completion"]]]
    rows += [[f"rating: {name}", v["calls"], v["prompt"], v["completion"]] for name, v in c["rating"].items()]
    if c.get("guideline_writer_calls") is not None:
        rows.append(["guideline writer", c["guideline_writer_calls"], "", ""])
    rows.append([Strong("total (sampling + rating)"), c["calls"], c["prompt"], c["completion"]])
    blocks: list[Block] = [Table(["LM calls by", "calls", "prompt tokens", "completion tokens"], rows)]
    timing = run.timing()
    rss = run.metrics.get("peak_rss_mib") or {}
    usage = run.metrics.get("stages") or {}
    if timing:
        memory = ["peak memory"] if rss else []
        tokens = ["local calls", "prompt tokens (cached)", "generated tokens"] if usage else []

        def token_cells(stage: str) -> list:
            u = usage.get(stage)
            if not usage:
                return []
            if not u or not u.get("calls"):
                return ["", "", ""]
            return [f"{u['calls']:,}", f"{u['prompt_tokens']:,} ({u['cached_prompt_tokens'] / max(1, u['prompt_tokens']):.0%})",
                    f"{u['generated_tokens']:,}"]

        def memory_cells(stage: str) -> list:
            if not rss:
                return []
            child = (usage.get(stage) or {}).get("children_peak_rss_mib")
            cell = f"{rss[stage]:,} MiB" if stage in rss else ""
            return [cell + (f" (+ child {child:,.0f} MiB)" if child else "")]

        blocks.append(Table(["stage", "wall time", *memory, *tokens],
                            [[k, f"{v:.1f} s", *memory_cells(k), *token_cells(k)] for k, v in timing.items()] +
                            [[Strong("total"), f"{sum(timing.values()):.1f} s", *([""] if rss else []),
                              *([""] * len(tokens))]]))
        if usage:
            blocks.append(Text("peak memory: this process during the stage (the local models run in it), and the "
                               "largest child process it ran (the largest of any session of the run); local calls and "
                               "tokens: requests served by llama.cpp over the run's sessions, with the share of "
                               "prompt tokens served from its prompt cache.",
                               "note"))
    else:
        blocks.append(Text("no timing in metrics.json", "note"))
    warnings = run.metrics.get("warnings") or []
    if warnings:
        blocks += [Text("warnings", "warn"), Bullets([str(w) for w in warnings])]
    return blocks
