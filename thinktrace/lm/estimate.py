"""What `--dry-run` says a run may spend: per model, its LM calls at most (from the stage plans), the tokens they
may use and, for models LiteLLM's offline price map knows, what they may cost. Nothing is fetched and no model
is loaded (``LITELLM_LOCAL_MODEL_COST_MAP`` is set before LiteLLM is imported: thinktrace._env).

The estimate is an upper bound built from the plan's upper bound on calls: per call, the prompt is the
guideline, a mean item of the corpus and ~150 tokens of instructions (counted with ``litellm.token_counter``,
the model's own tokenizer where LiteLLM has it), and the answer is the model's `max_tokens`. Guideline-writer
calls carry traces too; they are few, and counted the same way.
"""

from __future__ import annotations

from collections import Counter

INSTRUCTION_TOKENS = 150  #: the prompt format's own text (field names, instructions), per call


def _calls_per_model(spec, stages: dict) -> Counter:
    """LM calls at most per model entry name, from the stage plans."""
    raters = [r.name for r in spec.models.raters]
    calls: Counter = Counter()

    def rater_of(variant: str) -> str | None:
        owners = [r for r in raters if variant == r or variant.startswith((f"{r}+", f"{r}@"))]
        return max(owners, key=len) if owners else None

    if "traces" in stages:
        calls[spec.generator.name] += stages["traces"]["lm_calls_max"]
    if "self_traces" in stages:  # the student, when it is a model entry (else the local base: no cost)
        student = stages["self_traces"]["generator"]
        if student in [*raters, spec.generator.name]:
            calls[student] += stages["self_traces"]["lm_calls_max"]
    if "trace_quality" in stages:  # the reader, when it is a model entry (else the local base: no cost)
        reader = stages["trace_quality"]["reader"]
        if reader in [*raters, spec.generator.name]:
            calls[reader] += stages["trace_quality"]["lm_calls_max"]
    if "prompts" in stages:
        per = stages["prompts"]["lm_calls_max"] // max(1, len(stages["prompts"]["variants"]) + len(raters))
        for name in [*raters, *stages["prompts"]["variants"]]:
            calls[rater_of(name) or name] += per
    if "guidelines" in stages:
        g = stages["guidelines"]
        from thinktrace.run.roles import Roles

        writer = Roles(spec).writer()  # its own entry is a model of its own, even under a rater's name
        own = writer.model is spec.guidelines.writer
        calls[f"writer:{writer.name}" if own else writer.name] += g["writer_calls"]
        for r in raters:
            calls[r] += (g["lm_calls_max"] - g["writer_calls"]) // max(1, len(raters))
    if "evaluate" in stages:
        e = stages["evaluate"]
        per = e["lm_calls_max"] // max(1, len(e["variants"]))
        for variant in e["variants"]:
            owner = rater_of(variant)
            if owner:  # fine-tuned variants run on the local base model
                calls[owner] += per
    return calls


def _model_entry(spec, name: str):
    if name.startswith("writer:"):
        return spec.guidelines.writer
    return spec.model_named(name)


def _tokens(text: str, litellm_model: str) -> int:
    import litellm

    try:
        return int(litellm.token_counter(model=litellm_model, text=text))
    except Exception:
        return max(1, len(text) // 4)


def price(litellm_model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """US dollars from LiteLLM's offline price map; None when the map does not know the model."""
    import litellm

    litellm.suppress_debug_info = True
    try:
        inp, out = litellm.cost_per_token(model=litellm_model, prompt_tokens=prompt_tokens,
                                          completion_tokens=completion_tokens)
    except Exception:
        return None
    return float(inp + out)


def estimate(spec, stages: dict, corpus, guideline: str) -> list[dict]:
    """Per model: name, model, calls (at most), input/output tokens (at most) and usd (None: cost unknown)."""
    calls = _calls_per_model(spec, stages)
    texts = [it.text for it in corpus.items] or [""]
    out = []
    for name, n in calls.items():
        if not n:
            continue
        cfg = _model_entry(spec, name)
        model = f"{cfg.provider}/{cfg.model}"
        per_prompt = _tokens(guideline, model) + round(sum(_tokens(t, model) for t in texts[:200]) /
                                                       len(texts[:200])) + INSTRUCTION_TOKENS
        row = {"name": cfg.name, "model": model, "local": cfg.is_local or cfg.provider == "python", "calls": n,
               "input_tokens": n * per_prompt, "output_tokens": n * cfg.max_tokens}
        row["usd"] = None if row["local"] else price(model, row["input_tokens"], row["output_tokens"])
        out.append(row)
    return out


def cost_lines(rows: list[dict], budget=None) -> list[str]:
    """The dry-run's lines: one per model, a total, and how the total compares with the budget."""
    lines = []
    for r in rows:
        tokens = f"~{r['input_tokens']:,} input + {r['output_tokens']:,} output tokens"
        if r["local"]:
            cost = "cost unknown (local model: tokens only)"
        elif r["usd"] is None:
            cost = "cost unknown (not in LiteLLM's price map)"
        else:
            cost = f"~${r['usd']:,.2f} (LiteLLM price map)"
        lines.append(f"  cost {r['name']} ({r['model']}): at most {r['calls']:,} calls, {tokens}, {cost}")
    total_tokens = sum(r["input_tokens"] + r["output_tokens"] for r in rows)
    priced = [r["usd"] for r in rows if r["usd"] is not None]
    unknown = [r["name"] for r in rows if r["usd"] is None and not r["local"]]
    usd = f"~${sum(priced):,.2f}" if priced else "cost unknown"
    lines.append(f"  cost total: at most ~{total_tokens:,} tokens, {usd}"
                 + (f" (unpriced: {', '.join(unknown)})" if unknown and priced else "")
                 + " (upper bound: every call at its max_tokens)")
    if budget is not None and (budget.max_tokens or budget.max_usd):
        over = []
        if budget.max_tokens and total_tokens > budget.max_tokens:
            over.append(f"budget.max_tokens {budget.max_tokens:,}")
        if budget.max_usd and priced and sum(priced) > budget.max_usd:
            over.append(f"budget.max_usd {budget.max_usd:g}")
        lines.append("  budget: the estimate is above " + " and ".join(over) + "; the run stops there, resumable"
                     if over else "  budget: the estimate fits")
    return lines
