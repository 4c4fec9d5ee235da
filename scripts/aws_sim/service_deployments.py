"""ECS service deployments for the simulator: the record ECS keeps of every deployment of a
service (ListServiceDeployments, DescribeServiceDeployments, DescribeServiceRevisions,
StopServiceDeployment, ContinueServiceDeployment), and the staged deployments ECS runs itself
for a service whose `deploymentConfiguration.strategy` is BLUE_GREEN, LINEAR or CANARY.

A managed deployment moves through ECS' lifecycle stages on wall time (RECONCILE_SERVICE,
PRE_SCALE_UP, SCALE_UP, POST_SCALE_UP, TEST_TRAFFIC_SHIFT, POST_TEST_TRAFFIC_SHIFT,
PRODUCTION_TRAFFIC_SHIFT in one step or several, POST_PRODUCTION_TRAFFIC_SHIFT, BAKE_TIME,
CLEAN_UP): each stage lasts `stage_seconds`, SCALE_UP as long as a rolling deployment of the
same image, and the waits the service configures (`bakeTimeInMinutes`, the linear step and
canary bake times, PAUSE hook timeouts) last `minute_seconds` per minute; all divided by
`speed`. The green revision's tasks come up in SCALE_UP; the blue revision keeps its tasks and
is listed as an ACTIVE deployment until CLEAN_UP begins; the service deployment is SUCCESSFUL at
the end of CLEAN_UP.

Rolling deployments get a record too: IN_PROGRESS while ECS rolls, SUCCESSFUL once the rollout
completed (after `bakeTimeInMinutes` in BAKE_TIME when the service sets one), ROLLBACK_* when
ECS' circuit breaker rolled it back.

A test can make ECS roll a deployment back by itself (as on a deployment alarm or a failed
lifecycle hook) with `POST /_sim/service-deployments/rollback`; see README.md.
"""

import datetime as dt
import random
import time

from tasks import ApiError

MANAGED = ("BLUE_GREEN", "LINEAR", "CANARY")
STATUSES = ("PENDING", "IN_PROGRESS", "SUCCESSFUL", "STOPPED", "STOP_REQUESTED", "ROLLBACK_REQUESTED",
            "ROLLBACK_IN_PROGRESS", "ROLLBACK_SUCCESSFUL", "ROLLBACK_FAILED")
TERMINAL = ("SUCCESSFUL", "STOPPED", "ROLLBACK_SUCCESSFUL", "ROLLBACK_FAILED")
STAGES = ("RECONCILE_SERVICE", "PRE_SCALE_UP", "SCALE_UP", "POST_SCALE_UP", "TEST_TRAFFIC_SHIFT",
          "POST_TEST_TRAFFIC_SHIFT", "PRODUCTION_TRAFFIC_SHIFT", "POST_PRODUCTION_TRAFFIC_SHIFT",
          "BAKE_TIME", "CLEAN_UP")


def _epoch(t):
    return None if t is None else round(t.timestamp(), 3)


def _now():
    """Now, to the millisecond (what the API shows, so a filter by a time read back matches)."""
    t = dt.datetime.now(dt.timezone.utc)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def strategy_of(service):
    cfg = getattr(service, "deployment_configuration", None) or {}
    return cfg.get("strategy") or "ROLLING"


def _round(x):
    return float(round(x, 2))


class ServiceDeployments:
    def __init__(self, state, account):
        self.state = state  # sim.STATE: config (speed, stage_seconds, minute_seconds) and the lock
        self.account = account
        self.reset()

    def reset(self):
        self.records = {}  # arn -> record (internal fields start with "_")
        self.current = {}  # service arn -> arn of its newest service deployment
        self.revisions = {}  # service revision arn -> revision
        self.rules = []  # {"service": "cluster/name", "at_stage": ..., "after_seconds": s, "reason": ...}

    # ---- control API ----------------------------------------------------------------------

    def add_rule(self, req):
        svc = req["service"]
        if "/" not in svc:
            raise ValueError("`service` must be CLUSTER/SERVICE")
        stage = req.get("at_stage", "PRODUCTION_TRAFFIC_SHIFT")
        if stage not in STAGES:
            raise ValueError(f"`at_stage` must be one of {STAGES}")
        rule = {"service": svc, "at_stage": stage, "after_seconds": float(req.get("after_seconds", 0.0)),
                "reason": str(req.get("reason", "Deployment alarm triggered")),
                "kind": req.get("kind", "alarm")}
        if rule["kind"] not in ("alarm", "hook", "other"):
            raise ValueError("`kind` must be alarm, hook or other")
        if rule["kind"] == "alarm":
            rule["alarm"] = req.get("alarm", "sim-deployment-alarm")
        self.rules.append(rule)
        return rule

    def dump(self):
        return [self.public(r) for r in sorted(self.records.values(), key=lambda r: r["_created"])]

    # ---- lifecycle ------------------------------------------------------------------------

    def _seconds(self, x):
        return float(x) / max(float(self.state.config["speed"]), 1e-6)

    def _plan(self, service, rollout_seconds):
        """[(stage, seconds, production weight once the stage is over)] for a managed deployment."""
        cfg = service.deployment_configuration or {}
        st, minute = float(self.state.config["stage_seconds"]), float(self.state.config["minute_seconds"])
        plan = [("RECONCILE_SERVICE", st, 0.0), ("PRE_SCALE_UP", st, 0.0), ("SCALE_UP", rollout_seconds, 0.0),
                ("POST_SCALE_UP", st, 0.0), ("TEST_TRAFFIC_SHIFT", st, 0.0), ("POST_TEST_TRAFFIC_SHIFT", st, 0.0)]
        strategy = cfg.get("strategy")
        # Each step shifts traffic (one stage_seconds), then holds it for the step's bake.
        if strategy == "LINEAR":
            lin = cfg.get("linearConfiguration") or {}
            step = float(lin.get("stepPercent", 10.0))
            wait = float(lin.get("stepBakeTimeInMinutes", 6)) * minute
            weight = 0.0
            while weight < 100.0:
                weight = min(100.0, weight + step)
                plan.append(("PRODUCTION_TRAFFIC_SHIFT", st, weight))
                if weight < 100.0 and wait > 0:
                    plan.append(("PRODUCTION_TRAFFIC_SHIFT", wait, weight))
        elif strategy == "CANARY":
            can = cfg.get("canaryConfiguration") or {}
            percent = float(can.get("canaryPercent", 5.0))
            plan.append(("PRODUCTION_TRAFFIC_SHIFT", st, percent))
            plan.append(("PRODUCTION_TRAFFIC_SHIFT", float(can.get("canaryBakeTimeInMinutes", 10)) * minute, percent))
            plan.append(("PRODUCTION_TRAFFIC_SHIFT", st, 100.0))
        else:
            plan.append(("PRODUCTION_TRAFFIC_SHIFT", st, 100.0))
        plan.append(("POST_PRODUCTION_TRAFFIC_SHIFT", st, 100.0))
        plan.append(("BAKE_TIME", float(cfg.get("bakeTimeInMinutes", 0) or 0) * minute, 100.0))
        # Blue's tasks drain from the load balancer (its deregistration delay) before ECS calls
        # the deployment SUCCESSFUL.
        plan.append(("CLEAN_UP", float(self.state.config["cleanup_seconds"]), 100.0))
        return plan

    def _revision(self, region, service, td):
        cluster = service.cluster_arn.split("/")[-1]
        account = service.arn.split(":")[4]
        arn = f"arn:aws:ecs:{region}:{account}:service-revision/{cluster}/{service.name}/{random.randint(10**18, 10**19 - 1)}"
        self.revisions[arn] = {
            "serviceRevisionArn": arn, "serviceArn": service.arn, "clusterArn": service.cluster_arn,
            "taskDefinition": td, "launchType": service.launch_type or "FARGATE", "createdAt": _now(),
        }
        return arn

    def begin(self, region, service, target_td, source_tds, rollout_seconds):
        """A deployment ECS starts for an UpdateService or CreateService (its ECS deployment is
        service.deployments[0])."""
        now = _now()
        old = self.records.get(self.current.get(service.arn))
        if old is not None and old["status"] not in TERMINAL:
            self._finish(old, "STOPPED", "Stopped: a newer service deployment started.")
        cluster = service.cluster_arn.split("/")[-1]
        account = service.arn.split(":")[4]
        arn = f"arn:aws:ecs:{region}:{account}:service-deployment/{cluster}/{service.name}/{random.randint(10**18, 10**19 - 1)}"
        strategy = strategy_of(service)
        managed = strategy in MANAGED and bool(source_tds)
        cfg = dict(service.deployment_configuration or {})
        cb = cfg.get("deploymentCircuitBreaker") or {}
        alarms = cfg.get("alarms") or {}
        rec = {
            "serviceDeploymentArn": arn, "serviceArn": service.arn, "clusterArn": service.cluster_arn,
            "createdAt": now, "startedAt": now, "updatedAt": now, "status": "IN_PROGRESS",
            "statusReason": None, "lifecycleStage": "RECONCILE_SERVICE" if managed else "SCALE_UP",
            "deploymentConfiguration": cfg,
            "_target": self._revision(region, service, target_td),
            "_sources": [self._revision(region, service, td) for td in source_tds],
            "_target_td": target_td, "_source_tds": list(source_tds),
            "_created": time.monotonic(), "_dep": service.deployments[0]["id"] if service.deployments else None,
            "_managed": managed, "_stage_i": 0, "_entered": time.monotonic(),
            "_plan": self._plan(service, rollout_seconds) if managed else None,
            "_prod": 0.0, "_test": 0.0, "_paused": None, "_hooks": [], "_rollback_dep": None,
            "_region": region, "_cb": {"status": "MONITORING" if cb.get("enable") else "DISABLED",
                                        "failureCount": 0, "threshold": 0},
            "_alarms": {"status": "MONITORING" if alarms.get("enable") else "DISABLED",
                        "alarmNames": list(alarms.get("alarmNames") or []), "triggeredAlarmNames": []},
        }
        if not source_tds:
            rec["_prod"] = 100.0
        self.records[arn] = rec
        self.current[service.arn] = arn
        return rec

    def in_flight(self, service):
        rec = self.records.get(self.current.get(service.arn))
        return rec if rec is not None and rec["status"] not in TERMINAL else None

    def drives(self, service):
        """True while a managed deployment (not its rollback) decides the service's deployments."""
        rec = self.in_flight(service)
        return rec is not None and rec["_managed"] and rec["status"] in ("PENDING", "IN_PROGRESS")

    def _finish(self, rec, status, reason=None):
        now = _now()
        if rec["_managed"] or status != "SUCCESSFUL":
            # A rolling deployment's completion was published with its ECS deployment.
            events = getattr(self.state, "events", None)
            if events is not None:
                name = "SERVICE_DEPLOYMENT_COMPLETED" if status in ("SUCCESSFUL", "ROLLBACK_SUCCESSFUL") \
                    else "SERVICE_DEPLOYMENT_FAILED"
                events.deployment(rec["serviceArn"], name, rec["_dep"] or "",
                                  reason or f"service deployment {status}")
        rec["status"] = status
        rec["updatedAt"] = now
        if reason:
            rec["statusReason"] = reason
        if status in ("STOPPED",):
            rec["stoppedAt"] = now
        else:
            rec["finishedAt"] = now

    def _rule(self, service, stage):
        key = f"{service.cluster_arn.split('/')[-1]}/{service.name}"
        return next((r for r in self.rules if r["service"] == key and r["at_stage"] == stage), None)

    # ---- managed deployments ----------------------------------------------------------------

    def advance_managed(self, sim, backend, service, now, behaviour):
        """Moves a managed deployment through its stages up to `now` (monotonic) and sets the
        service's ECS deployments to match."""
        rec = self.in_flight(service)
        desired = service.desired_count
        green = next((d for d in service.deployments if d["id"] == rec["_dep"]), None)
        if green is None:
            return
        kind = behaviour.get("kind", "healthy")
        for _ in range(len(rec["_plan"]) + 2):
            stage, seconds, weight = rec["_plan"][rec["_stage_i"]]
            rec["lifecycleStage"] = stage
            if rec["_paused"] is not None:
                hook = rec["_paused"]
                if now < hook["_expires"]:
                    break
                hook["status"] = "TIMED_OUT"
                rec["_paused"] = None
                if hook["timeoutAction"] == "ROLLBACK":
                    self.rollback(sim, service, rec, f"Lifecycle hook {hook['hookId']} timed out at {stage}.",
                                  "hook")
                    return
                rec["_entered"] = hook["_expires"]
            if stage == "SCALE_UP" and kind in ("crash", "never_stable"):
                self._scale_up_failing(sim, service, rec, green, now, kind, behaviour)
                if rec["status"] != "IN_PROGRESS":
                    return
                break
            rule = self._rule(service, stage)
            if rule is not None and now - rec["_entered"] >= self._seconds(rule["after_seconds"]):
                self.rules.remove(rule)
                if rule["kind"] == "alarm":
                    rec["_alarms"]["triggeredAlarmNames"] = [rule["alarm"]]
                    rec["_alarms"]["status"] = "TRIGGERED"
                self.rollback(sim, service, rec, rule["reason"], rule["kind"])
                return
            elapsed = now - rec["_entered"]
            if stage == "SCALE_UP":
                total = self._seconds(seconds)
                frac = 1.0 if total <= 0 else min(1.0, elapsed / total)
                green["runningCount"] = min(desired, int(desired * frac))
                green["pendingCount"] = desired - green["runningCount"]
            if stage == "TEST_TRAFFIC_SHIFT":
                rec["_test"] = 100.0 if elapsed >= self._seconds(seconds) else 0.0
            if elapsed < self._seconds(seconds):
                break
            # The stage is over.
            rec["_entered"] += self._seconds(seconds)
            rec["_prod"] = weight
            if stage == "SCALE_UP":
                green.update(runningCount=desired, pendingCount=0, rolloutState="COMPLETED",
                             rolloutStateReason=f"ECS deployment {green['id']} completed.", updatedAt=_now())
            if rec["_stage_i"] + 1 >= len(rec["_plan"]):
                sim.STATE.stable_td[service.arn] = rec["_target_td"]
                self._finish(rec, "SUCCESSFUL", "Service deployment completed.")
                sim.event(service, f"(service deployment {rec['serviceDeploymentArn'].rsplit('/', 1)[-1]}) completed.")
                sim.event(service, "has reached a steady state.")
                break
            rec["_stage_i"] += 1
            nxt = rec["_plan"][rec["_stage_i"]][0]
            rec["lifecycleStage"] = nxt
            rec["updatedAt"] = _now()
            if nxt == "CLEAN_UP":
                # Blue's tasks are stopped: only green is left.
                for d in service.deployments[1:]:
                    sim.event(service, f"(deployment {d['id']}) has stopped {d['runningCount']} running tasks.")
                del service.deployments[1:]
            self._pause_if_hooked(service, rec, nxt)
        # Blue keeps serving until CLEAN_UP.
        for d in service.deployments[1:]:
            d["runningCount"], d["pendingCount"] = sim.STATE.deployments.get(d["id"], {}).get("running", desired), 0
        green["desiredCount"] = desired

    def _pause_if_hooked(self, service, rec, stage):
        cfg = service.deployment_configuration or {}
        for i, hook in enumerate(cfg.get("lifecycleHooks") or []):
            if hook.get("targetType") != "PAUSE" or stage not in (hook.get("lifecycleStages") or []):
                continue
            timeout = hook.get("timeoutConfiguration") or {}
            minutes = float(timeout.get("timeoutInMinutes", 60))
            detail = {"hookId": f"hook-{i}", "targetType": "PAUSE", "status": "AWAITING_ACTION",
                      "timeoutAction": timeout.get("action", "ROLLBACK"),
                      "_since": rec["_entered"],
                      "_expires": rec["_entered"] + self._seconds(minutes * float(self.state.config["minute_seconds"]))}
            detail["expiresAt"] = _now() + dt.timedelta(seconds=detail["_expires"] - time.monotonic())
            rec["_hooks"] = [h for h in rec["_hooks"] if h["hookId"] != detail["hookId"]] + [detail]
            rec["_paused"] = detail
            return

    def _scale_up_failing(self, sim, service, rec, green, now, kind, behaviour):
        desired = service.desired_count
        if kind == "never_stable":
            green["runningCount"] = max(desired - 1, 0)
            green["pendingCount"] = desired - green["runningCount"]
            return
        every = float(behaviour.get("seconds", self.state.config["task_fail_seconds"]))
        failed = int((now - rec["_entered"]) * max(float(self.state.config["speed"]), 1e-6) / every) if every > 0 else 0
        if failed > green["failedTasks"]:
            sim.event(service, f"(deployment {green['id']}) task failed: essential container in task exited (failed tasks: {failed}).")
        green.update(runningCount=0, pendingCount=desired, failedTasks=failed)
        enabled, rollback = sim.circuit_breaker(service)
        threshold = min(200, max(3, -(-desired // 2)))
        rec["_cb"].update(failureCount=failed, threshold=threshold)
        if enabled and failed >= threshold and rollback:
            rec["_cb"]["status"] = "TRIGGERED"
            self.rollback(sim, service, rec, "Circuit breaker: tasks failed to start.", "circuit_breaker")

    # ---- rollbacks and stops ------------------------------------------------------------------

    def rollback(self, sim, service, rec, reason, kind, requested=False):
        """ECS puts the source revision back: for a managed deployment whose blue revision still
        runs, production traffic returns to it at once; otherwise a rolling deployment of the
        source revision."""
        now = time.monotonic()
        source_td = rec["_source_tds"][0] if rec["_source_tds"] else None
        rec["status"] = "ROLLBACK_REQUESTED" if requested else "ROLLBACK_IN_PROGRESS"
        rec["statusReason"] = reason
        rec["updatedAt"] = _now()
        rec["rollback"] = {"reason": reason, "startedAt": _now(),
                           "serviceRevisionArn": rec["_sources"][0] if rec["_sources"] else None}
        rec["_paused"] = None
        for h in rec["_hooks"]:
            if h["status"] == "AWAITING_ACTION":
                h["status"] = "FAILED" if kind == "hook" else "SUCCEEDED"
        sim.event(service, f"(service deployment {rec['serviceDeploymentArn'].rsplit('/', 1)[-1]}) rolling back: {reason}")
        sim.STATE.events.deployment(service.arn, "SERVICE_DEPLOYMENT_FAILED", rec["_dep"] or "", reason)
        if source_td is None:
            self._finish(rec, "ROLLBACK_FAILED", f"{reason} No source revision to roll back to.")
            return
        blue = next((d for d in service.deployments[1:] if d["taskDefinition"] == source_td), None)
        if rec["_managed"] and blue is not None:
            desired = service.desired_count
            blue.update(status="PRIMARY", runningCount=desired, pendingCount=0, rolloutState="COMPLETED",
                        rolloutStateReason=f"ECS deployment {blue['id']} completed.", updatedAt=_now())
            service.deployments = [blue]
            service.task_definition = source_td
            rec["_prod"] = rec["_test"] = 0.0
            rec["_rollback_dep"] = blue["id"]
            rec["_rollback_until"] = now + self._seconds(self.state.config["stage_seconds"])
        else:
            sim.start_deployment(service, source_td)
            rec["_rollback_dep"] = service.deployments[0]["id"]
            rec["_rollback_until"] = None

    def after_advance(self, sim, service, now):
        """Brings the service's newest record in line with its ECS deployments (rolling
        deployments, and every rollback)."""
        rec = self.in_flight(service)
        if rec is None:
            return
        primary = service.deployments[0] if service.deployments else None
        if rec["status"] in ("ROLLBACK_REQUESTED", "ROLLBACK_IN_PROGRESS"):
            rec["status"] = "ROLLBACK_IN_PROGRESS"
            done = primary is not None and primary["id"] == rec["_rollback_dep"] and primary["rolloutState"] == "COMPLETED"
            until = rec.get("_rollback_until")
            if done and (until is None or now >= until):
                self._finish(rec, "ROLLBACK_SUCCESSFUL")
            return
        if rec["status"] == "STOP_REQUESTED":
            self._finish(rec, "STOPPED", "Stopped by StopServiceDeployment (ABORT).")
            return
        if rec["_managed"] or primary is None or primary["id"] != rec["_dep"]:
            return
        if primary["rolloutState"] == "FAILED":
            rec["_cb"]["status"] = "TRIGGERED"
            self._finish(rec, "STOPPED", primary.get("rolloutStateReason"))
        elif primary["rolloutState"] == "COMPLETED":
            # A service's first deployment (CreateService) has nothing to compare with: no bake.
            bake = float((service.deployment_configuration or {}).get("bakeTimeInMinutes", 0) or 0) \
                if rec["_sources"] else 0.0
            if rec["lifecycleStage"] != "BAKE_TIME":
                rec["lifecycleStage"] = "BAKE_TIME"
                rec["_entered"] = now
                rec["_prod"] = 100.0
            rule = self._rule(service, "BAKE_TIME")
            if rule is not None and now - rec["_entered"] >= self._seconds(rule["after_seconds"]):
                self.rules.remove(rule)
                if rule["kind"] == "alarm":
                    rec["_alarms"].update(status="TRIGGERED", triggeredAlarmNames=[rule["alarm"]])
                self.rollback(sim, service, rec, rule["reason"], rule["kind"])
            elif rule is None and now - rec["_entered"] >= self._seconds(bake * float(self.state.config["minute_seconds"])):
                self._finish(rec, "SUCCESSFUL", "Service deployment completed.")

    def circuit_breaker_rollback(self, service):
        """ECS' circuit breaker rolled a rolling deployment back (sim.advance started the
        rollback deployment, service.deployments[0])."""
        rec = self.in_flight(service)
        if rec is None or rec["_managed"]:
            return
        reason = "Circuit breaker: tasks failed to start."
        rec.update(status="ROLLBACK_IN_PROGRESS", statusReason=reason, updatedAt=_now())
        rec["rollback"] = {"reason": reason, "startedAt": _now(),
                           "serviceRevisionArn": rec["_sources"][0] if rec["_sources"] else None}
        rec["_cb"]["status"] = "TRIGGERED"
        rec["_rollback_dep"] = service.deployments[0]["id"]
        rec["_rollback_until"] = None

    # ---- API ------------------------------------------------------------------------------

    def public(self, rec, service=None):
        """The record as DescribeServiceDeployments shows it; task counts need its `service`."""
        def summary(arn, weight, test, dep_id):
            dep = next((d for d in getattr(service, "deployments", []) if d["id"] == dep_id), None)
            out = {"arn": arn, "requestedTaskCount": 0, "runningTaskCount": 0, "pendingTaskCount": 0,
                   "requestedProductionTrafficWeight": _round(weight), "requestedTestTrafficWeight": _round(test)}
            if dep is not None:
                out.update(requestedTaskCount=dep["desiredCount"], runningTaskCount=dep["runningCount"],
                           pendingTaskCount=dep.get("pendingCount", 0))
            return out

        out = {k: v for k, v in rec.items() if not k.startswith("_") and v is not None}
        for k in ("createdAt", "startedAt", "updatedAt", "finishedAt", "stoppedAt"):
            if k in out:
                out[k] = _epoch(out[k])
        out["targetServiceRevision"] = summary(rec["_target"], rec["_prod"], rec["_test"], rec["_dep"])
        out["sourceServiceRevisions"] = [summary(a, 100.0 - rec["_prod"], 100.0 - rec["_test"], None)
                                         for a in rec["_sources"]]
        if rec["_managed"] or rec["status"] not in TERMINAL:
            out["lifecycleStage"] = rec["lifecycleStage"]
        else:
            out.pop("lifecycleStage", None)
        if rec["_hooks"]:
            out["lifecycleHookDetails"] = [
                {k: (_epoch(v) if k == "expiresAt" else v) for k, v in h.items() if not k.startswith("_")}
                for h in rec["_hooks"]]
        if "rollback" in rec:
            out["rollback"] = {k: (_epoch(v) if k == "startedAt" else v) for k, v in rec["rollback"].items()
                               if v is not None}
        out["deploymentCircuitBreaker"] = dict(rec["_cb"])
        out["alarms"] = dict(rec["_alarms"])
        return out

    def _svc_arn(self, backend, cluster, service):
        cluster = (cluster or "default").split("/")[-1]
        name = (service or "").split("/")[-1]
        svc = backend.services.get(f"{cluster}:{name}")
        if svc is None:
            raise ApiError("ServiceNotFoundException", f"Service not found: {name}")
        return svc

    def list_service_deployments(self, backend, region, body):
        svc = self._svc_arn(backend, body.get("cluster"), body.get("service"))
        statuses = body.get("status") or []
        bad = [s for s in statuses if s not in STATUSES]
        if bad:
            raise ApiError("InvalidParameterException", f"status {bad[0]!r} is not one of {list(STATUSES)}")
        created = body.get("createdAt") or {}
        after, before = created.get("after"), created.get("before")
        out = []
        for rec in sorted(self.records.values(), key=lambda r: r["_created"], reverse=True):
            if rec["serviceArn"] != svc.arn or (statuses and rec["status"] not in statuses):
                continue
            ts = rec["createdAt"].timestamp()
            if (after is not None and ts < float(after)) or (before is not None and ts > float(before)):
                continue
            out.append({"serviceDeploymentArn": rec["serviceDeploymentArn"], "serviceArn": rec["serviceArn"],
                        "clusterArn": rec["clusterArn"], "createdAt": _epoch(rec["createdAt"]),
                        "startedAt": _epoch(rec["startedAt"]), "finishedAt": _epoch(rec.get("finishedAt")),
                        "targetServiceRevisionArn": rec["_target"], "status": rec["status"],
                        "statusReason": rec.get("statusReason")})
        limit = int(body.get("maxResults") or 20)
        start = int(body.get("nextToken") or 0)
        page = [{k: v for k, v in x.items() if v is not None} for x in out[start:start + limit]]
        res = {"serviceDeployments": page}
        if start + limit < len(out):
            res["nextToken"] = str(start + limit)
        return res

    @staticmethod
    def _describe(body, field, out, show):
        """A Describe* of 1 to 20 ARNs: `show(arn)` for each known one, the rest under
        `failures` with reason MISSING, as ECS answers."""
        arns = body.get(field) or []
        if not arns or len(arns) > 20:
            raise ApiError("InvalidParameterException", f"{field} must hold 1 to 20 ARNs")
        found, failures = [], []
        for arn in arns:
            shown = show(arn)
            if shown is None:
                failures.append({"arn": arn, "reason": "MISSING"})
            else:
                found.append(shown)
        return {out: found, "failures": failures}

    def describe_service_deployments(self, backend, region, body, services):
        def show(arn):
            rec = self.records.get(arn)
            return None if rec is None else self.public(rec, services.get(rec["serviceArn"]))

        return self._describe(body, "serviceDeploymentArns", "serviceDeployments", show)

    def describe_service_revisions(self, backend, region, body):
        def show(arn):
            rev = self.revisions.get(arn)
            return None if rev is None else {k: (_epoch(v) if k == "createdAt" else v) for k, v in rev.items()}

        return self._describe(body, "serviceRevisionArns", "serviceRevisions", show)

    def stop_service_deployment(self, sim, backend, region, body, services):
        arn = body.get("serviceDeploymentArn") or ""
        rec = self.records.get(arn)
        if rec is None:
            raise ApiError("ServiceDeploymentNotFoundException", f"Service deployment not found: {arn}")
        stop_type = body.get("stopType", "ROLLBACK")
        if stop_type not in ("ROLLBACK", "ABORT"):
            raise ApiError("InvalidParameterException", "stopType must be ABORT or ROLLBACK")
        if rec["status"] in TERMINAL:
            raise ApiError("ClientException",
                           f"The service deployment {arn} is {rec['status']} and can no longer be stopped.")
        service = services.get(rec["serviceArn"])
        if rec["status"] in ("ROLLBACK_REQUESTED", "ROLLBACK_IN_PROGRESS", "STOP_REQUESTED"):
            return {"serviceDeploymentArn": arn}  # already stopping: ECS carries on
        if stop_type == "ABORT":
            rec.update(status="STOP_REQUESTED", updatedAt=_now())
            rec["_paused"] = None
        else:
            self.rollback(sim, service, rec, "Rollback requested by StopServiceDeployment.", "other", requested=True)
        return {"serviceDeploymentArn": arn}

    def continue_service_deployment(self, backend, region, body):
        arn = body.get("serviceDeploymentArn") or ""
        rec = self.records.get(arn)
        if rec is None:
            raise ApiError("ServiceDeploymentNotFoundException", f"Service deployment not found: {arn}")
        hook = rec["_paused"]
        if hook is None or (body.get("hookId") and body["hookId"] != hook["hookId"]):
            raise ApiError("ClientException", f"The service deployment {arn} is not waiting on that hook.")
        rec["_paused"] = None
        hook["status"] = "SUCCEEDED"
        if body.get("action") == "ROLLBACK":
            return {"serviceDeploymentArn": arn, "_rollback": True}
        rec["_entered"] = time.monotonic()
        return {"serviceDeploymentArn": arn}
