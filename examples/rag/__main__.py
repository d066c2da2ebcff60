"""``python -m examples.rag "question" [--docs DIR]``: answer from local documents, with sources.

Starts a private local Ray and troupe's model app (the bundled SmolLM2 and MiniLM), indexes the
docs in a named actor, runs the declared plan on a team, prints the answer with its cited
sources resolved to files, and stops everything it started.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import ray

from agents import TroupeSettings, start_team
from examples.rag.chunks import load_docs
from examples.rag.index import start_index
from examples.rag.workflow import rag_answer, rag_settings, rag_task, render
from serve import deploy, shutdown

ROOT = Path(__file__).resolve().parents[2]
DOCS = Path(__file__).resolve().parent / "docs"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit status 0 when the answer cites a retrieved source."""
    parser = argparse.ArgumentParser(prog="python -m examples.rag", description=__doc__)
    parser.add_argument("question", help="what to ask the documents")
    parser.add_argument("--docs", type=Path, default=DOCS, help="folder of Markdown files")
    parser.add_argument("--data-dir", type=Path, default=Path(".troupe/rag"), help="state dir")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port of the model API")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)

    docs = args.docs.resolve()
    chunks = load_docs(docs)
    settings = rag_settings(args.data_dir.resolve(), overrides={"serve": {"port": args.port}})
    with local_ray(settings), models(settings) as base_url:
        index = start_index(chunks)
        team = start_team(settings.with_local_endpoint(base_url))
        try:
            outcome = team.run(rag_task(args.question))
        finally:
            team.stop()
            ray.kill(index, no_restart=True)
    result = rag_answer(outcome, chunks, docs_dir=docs)
    print(result.model_dump_json(indent=2) if args.json else render(result))
    return 0 if result.completed and result.cites_retrieved else 1


@contextlib.contextmanager
def local_ray(settings: TroupeSettings) -> Iterator[None]:
    """A private local Ray whose workers can import ``examples`` (shut down afterwards); an
    already initialised Ray is used as is."""
    if ray.is_initialized():
        yield
        return
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(
        address="local",
        num_cpus=settings.ray.num_cpus,
        namespace=settings.ray.namespace,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        runtime_env={"env_vars": {"PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}},
    )
    try:
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def models(settings: TroupeSettings) -> Iterator[str]:
    """troupe's model app on Serve; deleted afterwards."""
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    base_url = deploy(settings.serve)
    try:
        yield base_url
    finally:
        shutdown(settings.serve)


if __name__ == "__main__":
    sys.exit(main())
