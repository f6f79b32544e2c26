"""User-facing errors. Each renders as one line: `<file>: <field.path>: <what is wrong / what is allowed>`."""

from __future__ import annotations


class ThinktraceError(Exception):
    """Base class for errors the CLI reports as one line (exit code 2) instead of a traceback."""


class SpecError(ThinktraceError):
    """A problem with the experiment spec or with what it points to (data files, programs, models).

    `field` is the dotted path of the spec field at fault (e.g. ``data.split.train``), `file` the spec or data
    file the problem was found in.
    """

    def __init__(self, field: str, message: str, file: str | None = None):
        self.field = field
        self.message = message
        self.file = file
        super().__init__(str(self))

    def __reduce__(self):  # picklable, so an error raised in a child process arrives whole
        return type(self), (self.field, self.message, self.file)

    def with_file(self, file: str) -> "SpecError":
        """Return a copy that names `file` when this error did not name one yet."""
        return self if self.file else SpecError(self.field, self.message, file)

    def __str__(self) -> str:
        where = f"{self.file}: " if self.file else ""
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"


class DataError(SpecError):
    """The data a spec points to cannot be used (missing columns, empty, undecodable, labels outside label_set)."""


class RunIncomplete(ThinktraceError):
    """A stage stopped with work left that a resume can do (an endpoint went down, or calls failed transiently
    after their retries). Everything finished so far is in the run folder's journals. `resume` is filled in by
    the compile command."""

    def __init__(self, stage: str, reason: str, resume: str | None = None):
        self.stage, self.reason, self.resume = stage, reason, resume
        super().__init__(str(self))

    def __reduce__(self):
        return type(self), (self.stage, self.reason, self.resume)

    def __str__(self) -> str:
        hint = f"; completed work is saved, resume with: {self.resume}" if self.resume else \
            "; completed work is saved, resume the run with --resume RUN_DIR"
        return f"run incomplete: stage {self.stage}: {self.reason}{hint}"


class EndpointDown(ThinktraceError):
    """An LM endpoint stopped answering (connection failures in a row, rejected credentials, or too many failed
    calls in a row): the stage stops at once instead of journalling a failure per item."""

    def __init__(self, model: str, where: str, reason: str):
        self.model, self.where, self.reason = model, where, reason
        super().__init__(str(self))

    def __reduce__(self):
        return type(self), (self.model, self.where, self.reason)

    def __str__(self) -> str:
        return f"endpoint down: model {self.model} at {self.where}: {self.reason}"


class BudgetReached(EndpointDown):
    """The run's budget (`budget.max_tokens` / `budget.max_usd`) is spent: no new LM call starts, and the stage
    stops the way it stops for an outage (everything finished is journalled; raise the budget and resume)."""

    def __init__(self, reason: str):
        self.model, self.where, self.reason = "", "", reason
        ThinktraceError.__init__(self, str(self))

    def __reduce__(self):
        return type(self), (self.reason,)

    def __str__(self) -> str:
        return f"budget reached: {self.reason}"
