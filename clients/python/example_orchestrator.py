#!/usr/bin/env python3
"""An orchestrator played against a running `healstore serve`.

It dispatches tasks to a small simulated fleet, one agent of which is broken:

- before each call to an agent it asks healstore for a permit, and sends the task
  elsewhere when the agent's circuit is open;
- a call that fails is reported as a failure; the actions healstore hands back
  (restart the agent, retry the task, ...) are carried out (simulated) and their
  outcome is reported; a call that works is reported as a success;
- it retries one report on purpose (same failure id: the server answers the first
  answer and writes nothing), operates a circuit by hand, reads the dashboard and a
  failure's audit trail, and prints a summary.

It exits 1 when anything unexpected happened (an error answer, a refused permit for a
healthy agent, a circuit that did not open for the broken one, a dashboard that does
not count the failures reported), 2 on bad arguments.

    python3 example_orchestrator.py --url http://127.0.0.1:7878 [--token TOKEN]
"""

import argparse
import datetime
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from healstore_client import Client, HealstoreError  # noqa: E402

AGENTS = ["agent-0", "agent-1", "agent-2", "agent-3"]
BROKEN = "agent-2"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True, help="the server, http://HOST:PORT")
    ap.add_argument("--token", default=os.environ.get("HEALSTORE_TOKEN"),
                    help="a write token (default: $HEALSTORE_TOKEN)")
    ap.add_argument("--tasks", type=int, default=32, help="tasks to dispatch (default 32)")
    ap.add_argument("--run", default="run", help="a prefix for this run's ids")
    args = ap.parse_args()

    hs = Client(args.url, token=args.token)
    problems = []

    def expect(ok, what):
        if not ok:
            problems.append(what)
            print("UNEXPECTED: " + what)

    failures = []          # failure ids reported
    outcomes = 0
    successes = 0
    refused = []           # (agent, task) refused a permit
    actions_done = 0

    def carry_out(report, agent):
        """Carries out the delegated actions (simulated): they work, except a restart
        of the broken agent. Reports the outcome."""
        nonlocal outcomes, actions_done
        actions = report.get("delegated_actions") or []
        if not actions:
            return
        ok = True
        for a in actions:
            actions_done += 1
            if a.get("action") == "restart_agent" and a.get("agent_id") == BROKEN:
                ok = False
        answer = hs.record_outcome(report["failure_id"], success=ok, duration_ms=25)
        expect(answer.get("failure_id") == report["failure_id"],
               "the outcome answers another failure: %r" % answer)
        outcomes += 1

    try:
        expect(hs.healthy(), "the server does not answer /healthz")
        try:
            hs.reset_circuit(BROKEN, "%s: a fresh start" % args.run)
        except HealstoreError as e:
            expect(False, "reset %s: %s" % (BROKEN, e))

        for n in range(args.tasks):
            task = "%s-task-%d" % (args.run, n)
            # Round robin, skipping agents whose circuit refuses the call.
            for k in range(len(AGENTS)):
                agent = AGENTS[(n + k) % len(AGENTS)]
                permit = hs.permit(agent)
                if permit.get("permitted") is False:
                    refused.append((agent, task))
                    continue
                break
            else:
                expect(False, "no agent admitted %s" % task)
                continue
            if agent != BROKEN:
                hs.record_success(agent, task_id=task)
                successes += 1
                continue
            fid = "%s-failure-%d" % (args.run, n)
            report = hs.record_failure("agent_down", agent_id=agent, task_id=task,
                                       failure_id=fid,
                                       metadata={"task": task, "orchestrator": "example"})
            expect(report.get("failure_id") == fid and report.get("duplicate") is False,
                   "a new failure answered %r" % {k: report.get(k) for k in ("failure_id", "duplicate")})
            failures.append(fid)
            if len(failures) == 1:
                # A retry (as after a lost answer): the first answer, nothing written.
                again = hs.record_failure("agent_down", agent_id=agent, task_id=task,
                                          failure_id=fid)
                expect(again.get("duplicate") is True, "a retry was not a duplicate")
                expect(again.get("delegated_actions") == report.get("delegated_actions"),
                       "a retry answered other actions")
            carry_out(report, agent)

        # A task that times out on a healthy agent: healstore asks for a retry.
        fid = "%s-timeout" % args.run
        report = hs.record_failure("task_timeout", agent_id="agent-1",
                                   task_id="%s-slow-task" % args.run, failure_id=fid,
                                   severity="medium")
        failures.append(fid)
        expect(any(a.get("action") == "retry_task" for a in report.get("delegated_actions", [])),
               "a task timeout was not answered with retry_task: %r" % report.get("delegated_actions"))
        carry_out(report, "agent-1")

        broken = hs.circuit(BROKEN)
        expect(broken is not None and broken.get("state") == "open",
               "the circuit of %s is not open: %r" % (BROKEN, broken and broken.get("state")))
        expect(any(a == BROKEN for a, _ in refused), "no permit was refused for %s" % BROKEN)
        expect(all(a == BROKEN for a, _ in refused),
               "a permit was refused for a healthy agent: %r" % refused)

        # An operator takes agent-3 out of rotation, then puts it back.
        hs.open_circuit("agent-3", "%s: maintenance" % args.run)
        expect(hs.permit("agent-3").get("permitted") is False,
               "agent-3 admitted a call while forced open")
        hs.close_circuit("agent-3", "%s: maintenance done" % args.run)
        expect(hs.permit("agent-3").get("permitted") is True,
               "agent-3 refused a call once closed")

        # The dashboard, over a window around the server's now.
        now = hs.dashboard()["timestamp"]
        t = datetime.datetime.fromisoformat(now.replace("Z", "+00:00"))
        fmt = lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
        dash = hs.dashboard(since=fmt(t - datetime.timedelta(hours=1)),
                            until=fmt(t + datetime.timedelta(hours=1)))
        total = dash["overall"]["total_failures"]
        expect(total >= len(failures),
               "the dashboard counts %d failures, %d were reported" % (total, len(failures)))
        health = dash.get("health_score")

        trail = hs.audit_failure(failures[0])
        types = [e["event_type"] for e in trail]
        expect("failure_detected" in types and "healing_completed" in types,
               "the audit trail of %s is %r" % (failures[0], types))
        page = hs.events(stream="failure-" + failures[0], limit=10)
        expect(len(page) == len(trail), "an events page and the audit trail differ")

        try:
            hs.record_outcome("%s-no-such-failure" % args.run, success=True)
            expect(False, "an outcome for an unknown failure was accepted")
        except HealstoreError as e:
            expect(e.status == 404 and e.code == "not_found",
                   "an unknown failure's outcome answered %d %s" % (e.status, e.code))
    except HealstoreError as e:
        expect(False, "the server answered %s (request id %s)" % (e, e.request_id))
        health = None

    summary = {
        "failures": failures,
        "outcomes": outcomes,
        "successes": successes,
        "actions": actions_done,
        "refused": [{"agent": a, "task": t} for a, t in refused],
        "health_score": health,
        "retried": hs.retried,
        "problems": problems,
    }
    print("reported %d failures, %d outcomes, %d successes; %d permits refused; health %s"
          % (len(failures), outcomes, successes, len(refused), health))
    print("summary " + json.dumps(summary, sort_keys=True))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
