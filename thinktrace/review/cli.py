"""`thinktrace review RUN_DIR`: review a run's inferred traces in a browser (a local web app on 127.0.0.1, no
account); reviews go to RUN_DIR/reviews.jsonl, and `thinktrace compile SPEC --resume RUN_DIR --reviewed` re-runs
what depends on the traces with the reviewed set.

    thinktrace review RUN_DIR [--port 8765] [--reviewer NAME] [--spec SPEC]
    thinktrace review RUN_DIR --policy reject-label-leaks [--reviewer policy]   # scripted, through the endpoints
    thinktrace review RUN_DIR --export tasks.json          # a Label Studio task file (+ tasks.json.config.xml)
    thinktrace review RUN_DIR --import export.json         # a Label Studio JSON export, back as reviews
    thinktrace review RUN_DIR --summary                    # counts and the reviewers' agreement (JSON)

Exit codes: 0 done; 2 bad input (one line on stderr)."""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
import threading
from pathlib import Path

from thinktrace.review.records import ReviewError

HOST = "127.0.0.1"  #: loopback only: the app has no account


def default_reviewer() -> str:
    try:
        return getpass.getuser() or "reviewer"
    except (KeyError, OSError):
        return "reviewer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """The app under uvicorn in a background thread (for `--policy`, tests and screenshots)."""

    def __init__(self, app, port: int = 0):
        import uvicorn

        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=self.port, log_level="warning",
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> "Server":
        import time

        self.thread.start()
        for _ in range(200):
            if self.server.started:
                return self
            if not self.thread.is_alive():
                raise ReviewError(f"the review app did not start on {self.url}")
            time.sleep(0.05)
        raise ReviewError(f"the review app did not start on {self.url} within 10 s")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def build(run_dir: str, spec: str | None, reviewer: str):
    from thinktrace.review.app import create_app
    from thinktrace.review.judge import RunJudge
    from thinktrace.review.store import ReviewStore

    store = ReviewStore(run_dir)
    return store, create_app(store, judge=RunJudge(run_dir, store.label_set, spec), reviewer=reviewer)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="thinktrace review", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a run folder with traces.jsonl")
    p.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free one); default 8765")
    p.add_argument("--reviewer", default=None, help="your name in reviews.jsonl (default: the login name)")
    p.add_argument("--spec", default=None, help="the run's spec, for the blind judge (default: the run folder's "
                   "spec.resolved.yaml)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--policy", choices=["reject-label-leaks"], help="apply a scripted review policy and exit")
    g.add_argument("--export", metavar="FILE", help="write a Label Studio task file and exit")
    g.add_argument("--import", dest="import_file", metavar="FILE", help="read a Label Studio JSON export and exit")
    g.add_argument("--summary", action="store_true", help="print the counts and the agreement (JSON) and exit")
    return p


def run(args) -> int:
    from thinktrace.review.policy import POLICIES

    reviewer = args.reviewer or (f"policy:{args.policy}" if args.policy else default_reviewer())
    store, app = build(args.run_dir, args.spec, reviewer)
    if args.summary:
        print(json.dumps(store.summary(args.reviewer or store.primary()), indent=2))
        return 0
    if args.export:
        from thinktrace.review.exchange import to_label_studio

        out = to_label_studio(store)
        Path(args.export).write_text(json.dumps(out["tasks"], indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        config = Path(f"{args.export}.config.xml")
        config.write_text(out["label_config"], encoding="utf-8")
        print(f"wrote {len(out['tasks'])} Label Studio tasks to {args.export} and the labeling config to {config}")
        return 0
    if args.import_file:
        from thinktrace.review.exchange import from_label_studio

        try:
            data = json.loads(Path(args.import_file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise ReviewError(f"{args.import_file}: not a readable JSON export ({err.__class__.__name__})") from None
        print(json.dumps(from_label_studio(store, data, reviewer=args.reviewer, judge=app.state.judge)))
        return 0
    if args.policy:
        with Server(app, port=0) as server:
            counts = POLICIES[args.policy](server.url, reviewer)
        print(f"{args.policy} as {reviewer}: {counts['rejected']} rejected, {counts['accepted']} accepted; "
              f"reviews in {store.journal}")
        return 0
    import uvicorn

    port = args.port or free_port()
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            raise ReviewError(f"port {port} on {HOST} is in use (another review app?); pass --port N, or --port 0 "
                              "for a free one") from None
    print(f"reviewing {len(store.traces)} traces of {store.path} as {reviewer}: http://{HOST}:{port}/ "
          "(Ctrl+C stops; reviews are saved as you make them)", file=sys.stderr)
    uvicorn.run(app, host=HOST, port=port, log_level="warning")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except ReviewError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
