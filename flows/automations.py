"""The Prefect automation a build over several machines relies on: a flow run whose machine died
stops sending heartbeats and is marked Crashed, so the build waiting for it fails with the
range's name instead of waiting for ever (a SIGKILLed worker cannot report anything itself).

Flow runs send a heartbeat every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds (the range deployment
sets 30 in prefect.yaml); after `within` seconds without one, or a final state, the run is
Crashed. The default outlasts the time a flow run waits for an API that went away (254 s,
prefect_api.RETRIES) plus a heartbeat or two: heartbeats sent while the server restarts are lost,
and a shorter window would crash live runs the moment it is back. `trace-build up` creates it; on
a server you run yourself:

    PREFECT_API_URL=http://host:4200/api python -m flows.automations [--within 300]
"""
from __future__ import annotations

import argparse
from datetime import timedelta

NAME = "trace-build-crash-silent-runs"
WITHIN_S = 300  # more than a flow run's wait for the API (prefect_api.patience_s: 254 s) plus a heartbeat


def crash_silent_runs(within_s: float = WITHIN_S):
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return Automation(
        name=NAME,
        description="Marks a flow run Crashed when its heartbeats stop (its machine or worker died).",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_s),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message="No heartbeat: the machine or worker running this flow run died.")],
    )


def ensure_automations(within_s: float = WITHIN_S) -> str:
    """Create the automation, or replace it with these settings; its id."""
    from prefect.automations import Automation

    try:
        Automation.read(name=NAME).delete()
    except ValueError:  # not there yet
        pass
    return str(crash_silent_runs(within_s).create().id)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--within", type=float, default=WITHIN_S, help="seconds without a heartbeat before a run is Crashed")
    args = p.parse_args()
    print(f"automation {NAME}: {ensure_automations(args.within)}")


if __name__ == "__main__":
    main()
