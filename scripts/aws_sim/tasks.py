"""ECS tasks for the simulator: one-off RunTask tasks that run on wall time, and service tasks
kept consistent with each deployment's counts. moto records RunTask but never runs anything.

One-off tasks go PROVISIONING -> PENDING -> RUNNING -> STOPPED. What the task does is chosen
through the control API (`POST /_sim/tasks`), matched on the image tag of the task's containers or
on the command override: exit with a code after some seconds, hang until stopped, or fail to
start. Without a rule a task exits 0 after `task_run_seconds`.

Service tasks: every deployment has `runningCount` RUNNING tasks started by the deployment id
(as ECS' service scheduler does), tasks of a draining deployment are stopped by the scheduler,
and each failed task of a crash-looping deployment is a STOPPED task with stopCode
EssentialContainerExited and its container's exit code 1.
"""

import random
import time


class ApiError(Exception):
    def __init__(self, code, message, status=400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _epoch(t):
    return None if t is None else round(t, 3)


class Tasks:
    def __init__(self, state, account):
        self.state = state  # sim.STATE: config (speed, task_* seconds) and the lock
        self.account = account
        self.reset()

    def reset(self):
        self.tasks = {}  # task arn -> task dict (internal fields start with "_")
        self.rules = []  # newest first
        self.synced = {}  # deployment id -> (running tasks, failed tasks) already materialised
        self.by_service = {}  # (cluster arn, "service:NAME") -> that service's tasks

    # ---- behaviour rules ------------------------------------------------------------------

    def add_rule(self, req):
        rule = {k: req[k] for k in ("tag", "command") if k in req}
        if not rule:
            raise ValueError("a task rule needs `tag` (an image tag) or `command` (the command, words joined by spaces)")
        if "fail_to_start" in req:
            rule["fail_to_start"] = str(req["fail_to_start"])
        elif req.get("hang"):
            rule["hang"] = True
        else:
            rule["exit"] = int(req.get("exit", 0))
            rule["seconds"] = float(req.get("seconds", self.state.config["task_run_seconds"]))
        self.rules.insert(0, rule)
        return rule

    def _rule_for(self, images, command):
        joined = " ".join(command) if command else None
        for r in self.rules:
            if "command" in r and joined is not None and r["command"] == joined:
                return r
            if "tag" in r and any(_tag(i) == r["tag"] for i in images):
                return r
        return {"exit": 0, "seconds": float(self.state.config["task_run_seconds"])}

    # ---- one-off tasks ----------------------------------------------------------------------

    def run_task(self, backend, region, body):
        cluster = self._cluster(backend, body.get("cluster"))
        try:
            td = backend.describe_task_definition(body["taskDefinition"])
        except Exception:
            raise ApiError("ClientException", "Unable to describe task definition.")
        if body.get("launchType") and body.get("capacityProviderStrategy"):
            raise ApiError("InvalidParameterException",
                           "Specifying both a launch type and capacity provider strategy is not supported.")
        awsvpc = (td.network_mode == "awsvpc") or body.get("launchType") == "FARGATE"
        net = (body.get("networkConfiguration") or {}).get("awsvpcConfiguration")
        if awsvpc and not (net and net.get("subnets")):
            raise ApiError("InvalidParameterException",
                           "Network Configuration must be provided when networkMode 'awsvpc' is specified.")
        names = [c.get("name") for c in td.container_definitions]
        overrides = (body.get("overrides") or {}).get("containerOverrides") or []
        for o in overrides:
            if o.get("name") not in names:
                raise ApiError("InvalidParameterException",
                               f"Override for container named {o.get('name')} is not a container in the TaskDefinition.")
        command = next((o.get("command") for o in overrides if o.get("command")), None)
        images = [c.get("image", "") for c in td.container_definitions]
        count = int(body.get("count", 1))
        if not 1 <= count <= 10:
            raise ApiError("InvalidParameterException", "count must be between 1 and 10.")
        started = []
        for _ in range(count):
            t = self._new_task(region, cluster, td, body.get("startedBy"), f"family:{td.family}",
                               body.get("launchType") or ("FARGATE" if awsvpc else "EC2"))
            t["overrides"] = {"containerOverrides": overrides}
            t["_rule"] = self._rule_for(images, command)
            t["_request"] = {k: body.get(k) for k in ("networkConfiguration", "launchType",
                                                       "capacityProviderStrategy", "platformVersion",
                                                       "overrides", "startedBy")}
            started.append(t)
        self.advance(time.time())
        return {"tasks": [self._public(t) for t in started], "failures": []}

    def stop_task(self, backend, region, body):
        cluster = self._cluster(backend, body.get("cluster"))
        t = self._find(cluster, body.get("task", ""))
        if t is None:
            raise ApiError("InvalidParameterException", "The referenced task was not found.")
        self.advance(time.time())
        if t["lastStatus"] != "STOPPED":
            self._stop(t, time.time(), "UserInitiated", body.get("reason") or "Task stopped by user", 143)
        return {"task": self._public(t)}

    # ---- reads --------------------------------------------------------------------------

    def list_tasks(self, backend, region, body):
        cluster = self._cluster(backend, body.get("cluster"))
        self.advance(time.time())
        want = body.get("desiredStatus") or "RUNNING"
        out = []
        for arn, t in self.tasks.items():
            if t["clusterArn"] != cluster or t["desiredStatus"] != want:
                continue
            if body.get("serviceName") and t["group"] != f"service:{body['serviceName'].split('/')[-1]}":
                continue
            if body.get("startedBy") and t.get("startedBy") != body["startedBy"]:
                continue
            if body.get("family") and t["group"] != f"family:{body['family']}":
                continue
            out.append(arn)
        start = int(body.get("nextToken") or 0)
        size = int(body.get("maxResults") or 100)
        page = out[start:start + size]
        res = {"taskArns": page}
        if start + size < len(out):
            res["nextToken"] = str(start + size)
        return res

    def describe_tasks(self, backend, region, body):
        cluster = self._cluster(backend, body.get("cluster"))
        wanted = body.get("tasks") or []
        if len(wanted) > 100:
            raise ApiError("InvalidParameterException", "Tasks cannot be longer than 100.")
        self.advance(time.time())
        found, failures = [], []
        for ref in wanted:
            t = self._find(cluster, ref)
            if t is None:
                failures.append({"arn": ref, "reason": "MISSING"})
            else:
                found.append(self._public(t))
        return {"tasks": found, "failures": failures}

    # ---- service tasks --------------------------------------------------------------------

    def sync_service(self, backend, region, service):
        """Makes the service's tasks match its deployments' counts (called after `advance`)."""
        now = time.time()
        cluster = service.cluster_arn
        group = f"service:{service.name}"
        own = self.by_service.setdefault((cluster, group), [])
        live = {d["id"] for d in service.deployments}
        for dep in service.deployments:
            mine = [t for t in own if t.get("startedBy") == dep["id"]]
            running = [t for t in mine if t["lastStatus"] == "RUNNING"]
            failed = [t for t in mine if t.get("stopCode") == "EssentialContainerExited"]
            try:
                td = backend.describe_task_definition(dep["taskDefinition"])
            except Exception:
                continue
            for _ in range(max(dep["runningCount"] - len(running), 0)):
                t = self._new_task(region, cluster, td, dep["id"], group, dep.get("launchType") or "FARGATE")
                t.update(lastStatus="RUNNING", startedAt=now, _rule={"hang": True}, _service=True)
                own.append(t)
            for t in running[dep["runningCount"]:]:
                self._stop(t, now, "ServiceSchedulerInitiated",
                           f"Scaling activity initiated by (deployment {dep['id']})", 0)
            for _ in range(max(dep.get("failedTasks", 0) - len(failed), 0)):
                t = self._new_task(region, cluster, td, dep["id"], group, dep.get("launchType") or "FARGATE")
                t.update(startedAt=now, _service=True)
                self._stop(t, now, "EssentialContainerExited", "Essential container in task exited", 1)
                own.append(t)
        # Deployments that are gone have no running tasks left.
        for t in own:
            if t["lastStatus"] == "RUNNING" and t.get("startedBy") not in live:
                self._stop(t, now, "ServiceSchedulerInitiated", "Task stopped by the service scheduler", 0)

    # ---- internals ------------------------------------------------------------------------

    def advance(self, now):
        speed = max(float(self.state.config["speed"]), 1e-6)
        start = float(self.state.config["task_start_seconds"]) / speed
        for t in self.tasks.values():
            if t.get("_service") or t["lastStatus"] == "STOPPED":
                continue
            age = now - t["createdAt"]
            rule = t["_rule"]
            if age < start / 2:
                t["lastStatus"] = "PROVISIONING"
                continue
            if age < start:
                t["lastStatus"] = "PENDING"
                continue
            began = t["createdAt"] + start
            if "fail_to_start" in rule:
                self._stop(t, began, "TaskFailedToStart", rule["fail_to_start"], None,
                           container_reason=rule["fail_to_start"])
                continue
            t["lastStatus"] = "RUNNING"
            t["startedAt"] = began
            for c in t["containers"]:
                c["lastStatus"] = "RUNNING"
            if rule.get("hang"):
                continue
            ends = began + rule["seconds"] / speed
            if now >= ends:
                self._stop(t, ends, "EssentialContainerExited", "Essential container in task exited", rule["exit"])

    def _new_task(self, region, cluster, td, started_by, group, launch_type):
        task_id = "%032x" % random.getrandbits(128)
        cluster_name = cluster.rsplit("/", 1)[-1]
        account = cluster.split(":")[4] if cluster.count(":") >= 5 else self.account
        arn = f"arn:aws:ecs:{region}:{account}:task/{cluster_name}/{task_id}"
        now = time.time()
        t = {
            "taskArn": arn,
            "clusterArn": cluster,
            "taskDefinitionArn": td.arn,
            "group": group,
            "lastStatus": "PROVISIONING",
            "desiredStatus": "RUNNING",
            "createdAt": now,
            "launchType": launch_type,
            "cpu": td.cpu,
            "memory": td.memory,
            "version": 1,
            "containers": [{
                "containerArn": f"arn:aws:ecs:{region}:{account}:container/{cluster_name}/{task_id}/{c.get('name')}",
                "taskArn": arn,
                "name": c.get("name"),
                "image": c.get("image"),
                "lastStatus": "PENDING",
            } for c in td.container_definitions],
        }
        if started_by:
            t["startedBy"] = started_by
        self.tasks[arn] = t
        return t

    def _stop(self, t, at, code, reason, exit_code, container_reason=None):
        t.update(lastStatus="STOPPED", desiredStatus="STOPPED", stopCode=code, stoppedReason=reason,
                 stoppingAt=at, stoppedAt=at, executionStoppedAt=at)
        for c in t["containers"]:
            c["lastStatus"] = "STOPPED"
            if exit_code is not None:
                c["exitCode"] = exit_code
            if container_reason:
                c["reason"] = container_reason

    def _cluster(self, backend, ref):
        name = (ref or "default").rsplit("/", 1)[-1]
        cluster = backend.clusters.get(name)
        if cluster is None:
            raise ApiError("ClusterNotFoundException", "Cluster not found.")
        return cluster.arn

    def _find(self, cluster, ref):
        if ref in self.tasks:
            t = self.tasks[ref]
            return t if t["clusterArn"] == cluster else None
        for arn, t in self.tasks.items():
            if arn.rsplit("/", 1)[-1] == ref and t["clusterArn"] == cluster:
                return t
        return None

    def _public(self, t):
        out = {k: v for k, v in t.items() if not k.startswith("_")}
        for k in ("createdAt", "startedAt", "stoppedAt", "stoppingAt", "executionStoppedAt"):
            if k in out:
                out[k] = _epoch(out[k])
        return out

    def dump(self):
        out = []
        for t in self.tasks.values():
            if t.get("_service"):
                continue
            p = self._public(t)
            p["request"] = t.get("_request")
            out.append(p)
        return out


def _tag(image):
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return last.split("@", 1)[1]
    return last.split(":", 1)[1] if ":" in last else "latest"
