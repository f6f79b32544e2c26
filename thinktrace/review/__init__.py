"""Review a run's inferred traces (issue 29): a local web app (`thinktrace review RUN_DIR`), the review journal
reviews.jsonl, the blind judge that re-checks an edit, review policies, Label Studio export / import, and the
reviewed trace set that `thinktrace compile SPEC --resume RUN_DIR --reviewed` re-runs the trace-dependent stages on.

Modules: records (the typed review line), store (a run folder's traces and reviews), judge (the run's blind judge),
app (the FastAPI app and its page), policy (scripted reviews through the endpoints), exchange (Label Studio),
cli (the command)."""
