"""Checking a global portfolio on many machines with Prefect's own engine.

``nightly_portfolio_check`` splits the roadmaps into groups and starts one run of the
``nightly-status-check`` deployment per group with :func:`prefect.deployments.run_deployment`.
Workers of a process work pool, on as many machines as needed, pick those runs up; each child
writes its own rows. Reminders stay exactly-once across workers because every reminder is
claimed in the shared database (PostgreSQL) before it is sent. A recipient with items in two
groups gets two digests that night (one per group), never the same item twice.
The child deployment's concurrency limit caps how many groups run at once (a limit of 1 runs them
one after the other): see docs/scaling.md.
"""

from __future__ import annotations

import asyncio
import logging

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from flows.nightly import list_roadmaps, resolve_as_of
from notifications.plurals import english_count

#: The deployment each group runs as (``<flow name>/<deployment name>``).
CHILD_DEPLOYMENT = "nightly-status-check/portfolio-group"


def groups(slugs: list[str], group_size: int) -> list[list[str]]:
    """Split ``slugs`` into consecutive groups of at most ``group_size`` (>= 1).

    Raises:
        ValueError: ``group_size`` < 1.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be at least 1, got {group_size}")
    return [slugs[i : i + group_size] for i in range(0, len(slugs), group_size)]


async def child_concurrency_limit(deployment: str) -> int | None:
    """The concurrency limit of ``deployment`` (``<flow>/<deployment>``), or None when it has none
    or cannot be read (run_deployment then reports the problem)."""
    from prefect.client.orchestration import get_client

    try:
        async with get_client() as client:
            found = await client.read_deployment_by_name(deployment)
    except Exception:  # noqa: BLE001 - only a diagnostic
        return None
    return found.global_concurrency_limit.limit if found.global_concurrency_limit else None


@flow(name="nightly-portfolio-check")
async def nightly_portfolio_check(
    as_of: str | None = None, group_size: int = 25, deployment: str = CHILD_DEPLOYMENT
) -> dict:
    """Fan the nightly check out over the portfolio: one child run of ``deployment`` per group of
    roadmaps, all started at once and awaited.

    Args:
        as_of: ISO-8601 instant with offset (passed to every child as text: run_deployment has
            rejected datetime parameters upstream); default now, fixed once for all children.
        group_size: roadmaps per child run.
        deployment: the child deployment's full name.

    Returns:
        ``{"as_of", "groups", "child_runs": [{"id", "roadmaps", "state"}], "failed"}``.

    Raises:
        RuntimeError: a child run did not complete (after all children finished).
    """
    logger = get_run_logger()
    moment = resolve_as_of(as_of).isoformat()
    slugs = [ref.slug for ref in list_roadmaps()]
    batches = groups(slugs, group_size)
    logger.info("checking %s in %s as of %s", english_count(len(slugs), "roadmap"), english_count(len(batches), "child run"),
                moment)

    limit = await child_concurrency_limit(deployment)
    if limit is not None and limit < len(batches):
        # A limit of 1 (prefect.yaml's, meant for the single-machine schedule) turns the fan-out
        # into one child at a time, however many workers there are.
        logger.log(
            logging.WARNING if limit == 1 else logging.INFO,
            "deployment %s has a concurrency limit of %d: at most %d of the %d child runs run at once, "
            "the others wait for a slot; on many machines raise it to the flow runs all workers may "
            "run together (docs/scaling.md)", deployment, limit, limit, len(batches),
        )

    async def child(batch: list[str]) -> FlowRun:
        return await run_deployment(
            name=deployment,
            parameters={"as_of": moment, "roadmaps": batch, "include_statuses": False},
            timeout=None,
            as_subflow=True,
        )

    runs = await asyncio.gather(*(child(batch) for batch in batches))
    children = [
        {"id": str(run.id), "roadmaps": batch, "state": run.state.type.value if run.state else "UNKNOWN"}
        for run, batch in zip(runs, batches)
    ]
    failed = [c for c in children if c["state"] != "COMPLETED"]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(children)} child runs did not complete: " + ", ".join(c["id"] for c in failed))
    return {"as_of": moment, "groups": len(batches), "child_runs": children, "failed": 0}
