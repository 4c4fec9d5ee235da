"""The local AWS for ecs-gitops: moto, plus what a deployment controller needs that moto lacks.

moto speaks the real AWS wire protocols but is a bookkeeper, not a scheduler. This WSGI layer
runs moto in-process and adds (see shared/notes/moto.md for why each is needed):

- ECS deployments that progress on wall time: UpdateService starts a new PRIMARY deployment,
  the old one becomes ACTIVE and drains, the new one reaches COMPLETED when running == desired;
  per image tag a test chooses healthy / slow / crash loop / never stable; ECS' deployment
  circuit breaker (with rollback) on crash loops; service events; full task definition ARNs;
  deploymentConfiguration kept as sent.
- ECS service deployments (ListServiceDeployments, DescribeServiceDeployments,
  DescribeServiceRevisions, StopServiceDeployment, ContinueServiceDeployment) for every
  deployment, and the staged deployments ECS runs for BLUE_GREEN, LINEAR and CANARY services
  (service_deployments.py).
- EventBridge events (alarm state changes, ECS deployment state changes) sent to an SQS queue,
  as a rule with that queue as target would (events.py).
- Accounts: every call acts in the account of its access key (moto maps STS AssumeRole keys to
  the role's account); roles that may be assumed, their external ids and credential lifetimes
  (expired credentials are refused), for tests of environments in other accounts.
- CloudWatch over smithy rpc-v2-cbor (aws-sdk-cloudwatch >= 1.100), translated to moto's
  JSON 1.0 and back.
- Fault injection per operation (HTTP 500/503, throttling, latency, dropped connection) by
  seeded rate or on the N-th call, and call counts per operation.
- A control API under /_sim/ (a path AWS never uses); see scripts/aws_sim/README.md.

Run: python sim.py --port 4566 (0 picks a free port; the chosen URL is printed on stdout).
"""

import argparse
import collections
import datetime as dt
import json
import logging
import math
import random
import socket
import sys
import threading
import time
import urllib.parse

import cbor2
from moto.ecs.models import EC2ContainerServiceBackend, ecs_backends
from moto.iam.models import get_account_id_from
from moto.logs.models import logs_backends
from moto.sqs.models import SQSBackend
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

import events as events_model
import service_deployments as sd_model
import tasks as task_model

ACCOUNT = "123456789012"


def _retained(self, queue_name, message):
    """moto reads a message's retention by computing every attribute of its queue, counting all
    its messages, for each message a receive looks at (quadratic in the queue's length); the
    retention period alone is the same answer."""
    retention = int(self.get_queue(queue_name).message_retention_period)
    return retention + message.sent_timestamp / 1000 > time.time()


SQSBackend.is_message_valid_based_on_retention_period = _retained
_moto_get_resource = EC2ContainerServiceBackend._get_resource


def _get_resource(self, resource_arn, parsed_arn):
    """moto finds a service ARN (TagResource, ListTagsForResource) by scanning every service;
    services are kept under "cluster:name", which the ARN names."""
    if parsed_arn["service"] == "service":
        cluster, _, name = resource_arn.split(":service/", 1)[-1].partition("/")
        service = self.services.get(f"{cluster}:{name}")
        if service is not None and service.arn == resource_arn:
            return service
    return _moto_get_resource(self, resource_arn, parsed_arn)


EC2ContainerServiceBackend._get_resource = _get_resource
CBOR_PREFIX = "/service/GraniteServiceVersion20100801/operation/"
TARGET_SERVICES = {
    "AmazonEC2ContainerServiceV20141113": "ecs",
    "AmazonEC2ContainerRegistry_V20150921": "ecr",
    "GraniteServiceVersion20100801": "cloudwatch",
    "Logs_20140328": "logs",
    "DynamoDB_20120810": "dynamodb",
    "AmazonSQS": "sqs",
}
FAULT_KINDS = ("http500", "http503", "throttle", "latency", "drop")


def utcnow():
    return dt.datetime.now(dt.timezone.utc)


class State:
    """Everything the control API can set or read; guarded by one lock."""

    def __init__(self):
        self.lock = threading.RLock()
        self.reset()

    def reset(self):
        with self.lock:
            # Seconds a healthy deployment takes to reach steady state, and how often a
            # crash-looping task fails; both divided by `speed`.
            self.config = {"speed": 1.0, "rollout_seconds": 2.0, "task_fail_seconds": 0.5,
                           # One-off tasks: PROVISIONING/PENDING this long, then RUNNING; without
                           # a rule they exit 0 after task_run_seconds.
                           "task_start_seconds": 0.2, "task_run_seconds": 1.0,
                           # Managed (blue/green, linear, canary) deployments: seconds each
                           # lifecycle stage lasts, and seconds one minute of the service's own
                           # waits (bakeTimeInMinutes, step bakes, hook timeouts) lasts.
                           "stage_seconds": 0.3, "minute_seconds": 60.0,
                           # CLEAN_UP: blue drained (the target group's deregistration delay).
                           "cleanup_seconds": 3.0,
                           # Lifetime of credentials from STS AssumeRole (the DurationSeconds
                           # asked for is replaced by this; calls signed with them fail with
                           # ExpiredTokenException once it is over).
                           "sts_credential_seconds": 3600.0}
            self.behaviours = {}  # image tag -> {"kind": ..., "seconds": ...}
            self.faults = []  # list of Fault
            self.calls = {}  # "ecs:DescribeServices" -> count
            # (unix time, "ecs:DescribeServices", injected fault kind or None)
            self.call_log = collections.deque(maxlen=20000)
            self.deployments = {}  # deployment id -> {"start": monotonic, "running": n}
            self.stable_td = {}  # service arn -> task definition arn of last completed deployment
            # Services whose deployments or tasks may still change (service arn -> (account,
            # region, service)): every ECS call brings only these up to date, so a settled
            # fleet of thousands of services costs nothing per call.
            self.moving = {}
            # Roles STS lets be assumed (role ARN -> required external id or None); with none
            # registered, any role may be assumed (moto's own behaviour).
            self.roles = {}
            self.temp_keys = {}  # access key id from AssumeRole -> expiry (unix time)
            self.seq = 0
            if getattr(self, "tasks", None) is not None:
                self.tasks.reset()
            if getattr(self, "service_deployments", None) is not None:
                self.service_deployments.reset()
            if getattr(self, "events", None) is not None:
                self.events.reset()


STATE = State()
STATE.tasks = task_model.Tasks(STATE, ACCOUNT)
STATE.service_deployments = sd_model.ServiceDeployments(STATE, ACCOUNT)
STATE.events = events_model.Events(STATE)
SDS = STATE.service_deployments
SD_OPS = ("ListServiceDeployments", "DescribeServiceDeployments", "DescribeServiceRevisions",
          "StopServiceDeployment", "ContinueServiceDeployment")
TASK_OPS = {"RunTask": "run_task", "StopTask": "stop_task", "ListTasks": "list_tasks",
            "DescribeTasks": "describe_tasks"}


class Fault:
    def __init__(self, spec):
        self.operation = spec.get("operation", "*")
        self.region = spec.get("region")  # only calls signed for this region, if set
        self.access_key = spec.get("access_key")  # only calls signed with this key, if set
        self.kind = spec["fault"]
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault must be one of {FAULT_KINDS}, got {self.kind!r}")
        self.rate = float(spec.get("rate", 1.0 if "nth" not in spec else 0.0))
        nth = spec.get("nth")
        self.nth = set(nth if isinstance(nth, list) else [nth]) if nth is not None else set()
        self.times = spec.get("times")  # at most this many injections
        self.latency_ms = int(spec.get("latency_ms", 1000))
        self.rng = random.Random(spec.get("seed", 0))
        self.injected = 0
        self.seen = 0

    def matches(self, op, region=None, access_key=None):
        if self.region is not None and region != self.region:
            return False
        if self.access_key is not None and access_key != self.access_key:
            return False
        if self.operation == "*":
            return True
        if self.operation.endswith(":*"):
            return op.split(":")[0] == self.operation[:-2]
        return op == self.operation

    def fire(self):
        """Called for each matching call; True when this call gets the fault."""
        self.seen += 1
        if self.times is not None and self.injected >= self.times:
            return False
        hit = self.seen in self.nth if self.nth else self.rng.random() < self.rate
        if hit:
            self.injected += 1
        return hit

    def describe(self):
        return {
            "operation": self.operation,
            "region": self.region,
            "access_key": self.access_key,
            "fault": self.kind,
            "rate": self.rate,
            "nth": sorted(self.nth),
            "times": self.times,
            "injected": self.injected,
            "seen": self.seen,
        }


# ---------------------------------------------------------------------------------------------
# ECS deployments


def image_tag(image):
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return last.split("@", 1)[1]
    return last.split(":", 1)[1] if ":" in last else "latest"


def behaviour_of(backend, td_arn):
    try:
        td = backend.describe_task_definition(td_arn)
    except Exception:
        return {"kind": "healthy"}
    for c in td.container_definitions:
        b = STATE.behaviours.get(image_tag(c.get("image", "")))
        if b:
            return b
    return {"kind": "healthy"}


def event(service, message):
    STATE.seq += 1
    service.events.insert(
        0, {"id": f"sim-{STATE.seq}", "createdAt": utcnow(), "message": f"(service {service.name}) {message}"}
    )
    del service.events[100:]


def new_deployment(service, td_arn, desired):
    dep_id = f"ecs-svc/{random.randint(10**15, 10**16 - 1)}"
    now = utcnow()
    STATE.deployments[dep_id] = {"start": time.monotonic(), "running": 0}
    return {
        "id": dep_id,
        "status": "PRIMARY",
        "taskDefinition": td_arn,
        "desiredCount": desired,
        "pendingCount": desired,
        "runningCount": 0,
        "failedTasks": 0,
        "createdAt": now,
        "updatedAt": now,
        "launchType": service.launch_type or "FARGATE",
        "rolloutState": "IN_PROGRESS",
        "rolloutStateReason": f"ECS deployment {dep_id} in progress.",
    }


def start_deployment(service, td_arn):
    """What UpdateService with a new task definition (or forceNewDeployment) does in ECS."""
    for d in service.deployments:
        if d["status"] == "PRIMARY":
            d["status"] = "ACTIVE"
            STATE.deployments.setdefault(d["id"], {"start": time.monotonic(), "running": 0})["running"] = d["runningCount"]
    # A deployment superseded before any of its tasks ran has nothing to drain; a FAILED one
    # stays listed (as in ECS) until the deployment that replaces it completes.
    service.deployments = [d for d in service.deployments
                           if d["runningCount"] > 0 or d.get("rolloutState") == "FAILED"]
    dep = new_deployment(service, td_arn, service.desired_count)
    service.deployments.insert(0, dep)
    service.task_definition = td_arn
    event(service, f"has started 1 tasks: (deployment {dep['id']}).")
    STATE.events.deployment(service.arn, "SERVICE_DEPLOYMENT_IN_PROGRESS", dep["id"],
                            f"ECS deployment {dep['id']} in progress.")


def circuit_breaker(service):
    cfg = (getattr(service, "deployment_configuration", None) or {}).get("deploymentCircuitBreaker") or {}
    return bool(cfg.get("enable")), bool(cfg.get("rollback"))


def advance(backend, service, now):
    """Brings one service's deployments up to `now` (lazily, on every ECS call)."""
    if not service.deployments:
        return
    if SDS.drives(service):
        SDS.advance_managed(sys.modules[__name__], backend, service, now,
                            behaviour_of(backend, service.deployments[0]["taskDefinition"]))
        service.running_count = sum(d["runningCount"] for d in service.deployments)
        service.pending_count = sum(d.get("pendingCount", 0) for d in service.deployments)
        SDS.after_advance(sys.modules[__name__], service, now)
        return
    speed = max(float(STATE.config["speed"]), 1e-6)
    primary = service.deployments[0]
    sim = STATE.deployments.setdefault(primary["id"], {"start": now, "running": 0})
    elapsed = (now - sim["start"]) * speed
    desired = service.desired_count
    primary["desiredCount"] = desired
    b = behaviour_of(backend, primary["taskDefinition"])
    kind = b.get("kind", "healthy")
    state = primary["rolloutState"]
    actives = [d for d in service.deployments[1:]]

    if state == "COMPLETED":
        primary["runningCount"], primary["pendingCount"] = desired, 0
    elif state == "FAILED":
        pass
    elif kind in ("healthy", "slow"):
        total = float(b.get("seconds", STATE.config["rollout_seconds"]))
        if elapsed >= total:
            primary.update(runningCount=desired, pendingCount=0, rolloutState="COMPLETED",
                           rolloutStateReason=f"ECS deployment {primary['id']} completed.", updatedAt=utcnow())
            STATE.stable_td[service.arn] = primary["taskDefinition"]
            STATE.events.deployment(service.arn, "SERVICE_DEPLOYMENT_COMPLETED", primary["id"],
                                    f"ECS deployment {primary['id']} completed.")
            for d in actives:
                event(service, f"(deployment {d['id']}) has stopped {d['runningCount']} running tasks.")
            del service.deployments[1:]
            actives = []
            event(service, f"(deployment {primary['id']}) deployment completed.")
            event(service, "has reached a steady state.")
        else:
            running = min(desired, int(desired * elapsed / total)) if total > 0 else desired
            primary.update(runningCount=running, pendingCount=desired - running)
    elif kind == "crash":
        fail_every = float(b.get("seconds", STATE.config["task_fail_seconds"]))
        failed = int(elapsed / fail_every) if fail_every > 0 else 0
        if failed > primary["failedTasks"]:
            event(service, f"(deployment {primary['id']}) task failed: essential container in task exited (failed tasks: {failed}).")
        primary.update(runningCount=0, pendingCount=desired, failedTasks=failed)
        enabled, rollback = circuit_breaker(service)
        threshold = min(200, max(3, math.ceil(desired * 0.5)))
        if enabled and failed >= threshold:
            primary.update(rolloutState="FAILED", updatedAt=utcnow(),
                           rolloutStateReason="ECS deployment circuit breaker: tasks failed to start.")
            STATE.events.deployment(service.arn, "SERVICE_DEPLOYMENT_FAILED", primary["id"],
                                    "ECS deployment circuit breaker: tasks failed to start.")
            event(service, f"(deployment {primary['id']}) deployment failed: tasks failed to start.")
            target = STATE.stable_td.get(service.arn)
            if rollback and target:
                event(service, f"rolling back to {target.rsplit('/', 1)[-1]}.")
                start_deployment(service, target)
                SDS.circuit_breaker_rollback(service)
                return advance(backend, service, now)
    elif kind == "never_stable":
        running = max(desired - 1, 0)
        primary.update(runningCount=running, pendingCount=desired - running)
    # Older deployments drain as the primary's tasks come up.
    old_total = max(desired - primary["runningCount"], 0)
    for d in actives:
        d["runningCount"] = min(STATE.deployments.get(d["id"], {}).get("running", 0), old_total)
        d["pendingCount"] = 0
        old_total -= d["runningCount"]
    service.running_count = sum(d["runningCount"] for d in service.deployments)
    service.pending_count = sum(d.get("pendingCount", 0) for d in service.deployments)
    SDS.after_advance(sys.modules[__name__], service, now)


def rollout_seconds(backend, td_arn):
    b = behaviour_of(backend, td_arn)
    return float(b.get("seconds", STATE.config["rollout_seconds"])) if b.get("kind") == "slow" \
        else float(STATE.config["rollout_seconds"])


def sources_of(service):
    """Task definitions a new deployment replaces: those of deployments with tasks running,
    the PRIMARY first."""
    out = []
    for d in service.deployments:
        if d["runningCount"] > 0 and d["taskDefinition"] not in out:
            out.append(d["taskDefinition"])
    return out


def advance_all():
    now = time.monotonic()
    for arn, (account, region, service) in list(STATE.moving.items()):
        backend = ecs_backends[account][region]
        if service.status == "ACTIVE":
            advance(backend, service, now)
            STATE.tasks.sync_service(backend, region, service)
        if service.status != "ACTIVE" or settled(service):
            del STATE.moving[arn]


def settled(service):
    """One completed deployment, its tasks in place and no service deployment in flight: later
    calls would change nothing until the service is written to again."""
    deps = service.deployments
    return (len(deps) <= 1 and (not deps or deps[0]["rolloutState"] == "COMPLETED")
            and SDS.in_flight(service) is None)


def moving(account, region, service):
    STATE.moving[service.arn] = (account, region, service)


def bulk_services(req):
    """Creates many services at once, each with its own task definition family, as a team's
    CreateService calls would, without a request per service (benchmarks at scale)."""
    region, cluster = req["region"], req["cluster"]
    names = [f"{req.get('prefix', 'svc')}{i:03d}" for i in range(int(req["count"]))]
    desired = int(req.get("desired", 1))
    backend = ecs_backends[ACCOUNT][region]
    if cluster not in backend.clusters:
        backend.create_cluster(cluster)
    for name in names:
        td = backend.register_task_definition(
            f"{cluster}-{name}", [{"name": "app", "image": req["image"], "essential": True}],
            cpu="256", memory="512")
        backend.create_service(cluster, name, desired, td.arn)
        ecs_after(ACCOUNT, region, "CreateService", {"cluster": cluster, "serviceName": name,
                                                     "taskDefinition": td.arn}, 200)
    return {"cluster": cluster, "services": names}


def with_current_deployment(out):
    """DescribeServices as ECS answers it: each service names its newest service deployment."""
    try:
        data = json.loads(out)
    except ValueError:
        return out
    for svc in data.get("services") or ([data["service"]] if "service" in data else []):
        arn = SDS.current.get(svc.get("serviceArn"))
        if arn:
            svc["currentServiceDeployment"] = arn
    return json.dumps(data).encode()


def service_of(account, region, body):
    backend = ecs_backends[account][region]
    cluster = (body.get("cluster") or "default").split("/")[-1]
    name = (body.get("service") or body.get("serviceName") or "").split("/")[-1]
    return backend, backend.services.get(f"{cluster}:{name}")


def ecs_after(account, region, op, body, status):
    """Corrects moto's bookkeeping after a successful ECS write."""
    if status >= 300:
        return
    if op == "CreateService":
        backend, service = service_of(account, region, body)
        if service is None:
            return
        service.deployment_configuration = body.get("deploymentConfiguration") or {
            "maximumPercent": 200, "minimumHealthyPercent": 100,
            "deploymentCircuitBreaker": {"enable": False, "rollback": False}}
        service.running_count, service.pending_count = 0, service.desired_count
        service.deployments = []
        service.events = []
        td = backend.describe_task_definition(body["taskDefinition"]).arn
        start_deployment(service, td)
        SDS.begin(region, service, td, [], rollout_seconds(backend, td))
        moving(account, region, service)
    elif op == "UpdateService":
        backend, service = service_of(account, region, body)
        if service is None:
            return
        moving(account, region, service)
        if body.get("taskDefinition"):
            # moto stores the string as given ("family:2"); ECS always reports the ARN.
            td = backend.describe_task_definition(body["taskDefinition"]).arn
            service.task_definition = td
            sources = sources_of(service)
            start_deployment(service, td)
            SDS.begin(region, service, td, sources, rollout_seconds(backend, td))
        elif body.get("forceNewDeployment"):
            td = service.deployments[0]["taskDefinition"] if service.deployments else service.task_definition
            sources = sources_of(service)
            start_deployment(service, td)
            SDS.begin(region, service, td, sources, rollout_seconds(backend, td))
        advance(backend, service, time.monotonic())


# ---------------------------------------------------------------------------------------------
# CloudWatch rpc-v2-cbor <-> JSON 1.0


def cbor_to_json(value):
    if isinstance(value, dict):
        return {k: cbor_to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [cbor_to_json(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, cbor2.CBORTag) and value.tag == 1:
        return float(value.value)
    if isinstance(value, bytes):
        import base64
        return base64.b64encode(value).decode()
    return value


DOUBLE_KEYS = {"Threshold", "Value", "Sum", "Minimum", "Maximum", "SampleCount", "Average"}


def to_epoch(v):
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        return dt.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
    return v


def json_to_cbor(value, key=None):
    if isinstance(value, dict):
        return {k: json_to_cbor(v, k) for k, v in value.items()}
    if isinstance(value, list):
        if key == "Timestamps":
            return [cbor2.CBORTag(1, to_epoch(v)) for v in value]
        return [json_to_cbor(v, key if key in ("Values",) else None) for v in value]
    if key and key.endswith("Timestamp") and value is not None:
        return cbor2.CBORTag(1, to_epoch(value))
    if key in DOUBLE_KEYS or key == "Values":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return value


# ---------------------------------------------------------------------------------------------
# The WSGI layer


def read_body(environ):
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    return environ["wsgi.input"].read(length) if length else b""


def cluster_of(service, body):
    """The ECS cluster a call is about (its `cluster`, or a service ARN's), for the call log."""
    if service != "ecs" or not body:
        return None
    try:
        req = json.loads(body)
    except ValueError:
        return None
    if not isinstance(req, dict):
        return None
    if req.get("cluster"):
        return str(req["cluster"]).split("/")[-1]
    arn = str(req.get("resourceArn") or "")
    if ":service/" in arn:
        return arn.split(":service/", 1)[1].split("/")[0]
    return None


def account_of(environ):
    """The account a request acts in: the one its access key belongs to (moto maps keys from
    STS AssumeRole to the role's account), else the default account."""
    key = access_key_of(environ)
    return get_account_id_from(key) if key else ACCOUNT


def access_key_of(environ):
    """The access key id a SigV4 request was signed with (None for unsigned requests)."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if "Credential=" not in auth:
        return None
    return auth.split("Credential=", 1)[1].split("/", 1)[0]


def region_of(environ):
    auth = environ.get("HTTP_AUTHORIZATION", "")
    try:
        scope = auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")
        return scope[2]
    except IndexError:
        return "us-east-1"


def identify(environ):
    """('ecs', 'DescribeServices') for an AWS call; None for anything else."""
    path = environ.get("PATH_INFO", "")
    if path.startswith(CBOR_PREFIX):
        return "cloudwatch", path[len(CBOR_PREFIX):], "cbor"
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if "." in target:
        prefix, op = target.split(".", 1)
        return TARGET_SERVICES.get(prefix, prefix.lower()), op, "json"
    scope = scope_service(environ)
    if scope in ("sts", "monitoring") and environ.get("REQUEST_METHOD") == "POST":
        return ("sts" if scope == "sts" else "cloudwatch"), None, "query"
    return None


def scope_service(environ):
    auth = environ.get("HTTP_AUTHORIZATION", "")
    try:
        return auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")[3]
    except IndexError:
        return None


def respond(start_response, status, body, content_type="application/json", extra=()):
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error",
              503: "Service Unavailable"}.get(status, "OK")
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))] + list(extra)
    start_response(f"{status} {reason}", headers)
    return [body]


def error_response(start_response, proto, status, code, message):
    if proto == "query":
        from xml.sax.saxutils import escape
        body = (f'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
                f'<Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error>'
                f'<RequestId>aws-sim</RequestId></ErrorResponse>').encode()
        return respond(start_response, status, body, "text/xml")
    if proto == "cbor":
        body = cbor2.dumps({"__type": code, "message": message})
        return respond(start_response, status, body, "application/cbor", [("smithy-protocol", "rpc-v2-cbor")])
    body = json.dumps({"__type": code, "message": message}).encode()
    return respond(start_response, status, body, "application/x-amz-json-1.1")


class App:
    def __init__(self):
        self.moto = DomainDispatcherApplication(create_backend_app)

    def call_moto(self, environ, body):
        environ["wsgi.input"] = __import__("io").BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"] = int(status.split()[0])
            captured["headers"] = headers

        chunks = self.moto(environ, capture)
        out = b"".join(chunks)
        if hasattr(chunks, "close"):
            chunks.close()
        return captured["status"], captured["headers"], out

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_sim/"):
            return self.control(environ, start_response, path[len("/_sim/"):])
        ident = identify(environ)
        body = read_body(environ)
        if ident is None:
            status, headers, out = self.call_moto(environ, body)
            start_response(f"{status} X", headers)
            return [out]
        service, op, proto = ident
        form = None
        if proto == "query":
            import urllib.parse
            form = dict(urllib.parse.parse_qsl(body.decode(errors="replace")))
            op = form.get("Action", "Unknown")
        name = f"{service}:{op}"
        region = region_of(environ)
        account = account_of(environ)
        with STATE.lock:
            STATE.calls[name] = STATE.calls.get(name, 0) + 1
            key = access_key_of(environ)
            fault = next((f for f in STATE.faults if f.matches(name, region, key) and f.fire()), None)
            STATE.call_log.append((time.time(), name, fault.kind if fault else None, key,
                                   cluster_of(service, body)))
            expired = key in STATE.temp_keys and time.time() >= STATE.temp_keys[key]
        if expired:
            code = "ExpiredToken" if proto == "query" else "ExpiredTokenException"
            return error_response(start_response, proto, 400, code,
                                  "The security token included in the request is expired")
        if fault is not None:
            if fault.kind == "latency":
                time.sleep(fault.latency_ms / 1000.0)
            elif fault.kind == "drop":
                sock = environ.get("werkzeug.socket")
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    sock.close()
                raise ConnectionAbortedError("aws-sim: dropped connection (fault injection)")
            elif fault.kind == "throttle":
                code = "Throttling" if service == "cloudwatch" else "ThrottlingException"
                return error_response(start_response, proto, 400, code, "Rate exceeded")
            elif fault.kind == "http500":
                return error_response(start_response, proto, 500, "InternalFailure", "aws-sim: injected internal error")
            elif fault.kind == "http503":
                return error_response(start_response, proto, 503, "ServiceUnavailable", "aws-sim: injected unavailability")
        if proto == "query" and service == "sts":
            return self.sts(environ, start_response, op, form, body)
        if proto == "query":
            before = self.alarm_state(account, region, op, form)
            status, headers, out = self.call_moto(environ, body)
            if status < 300:
                self.alarm_changed(account, region, op, form, before)
            start_response(f"{status} X", headers)
            return [out]
        if proto == "cbor":
            return self.cbor(environ, start_response, op, body)
        if service == "ecs" and (op in SD_OPS or op in TASK_OPS):
            # Operations the simulator answers itself (moto has none of them).
            with STATE.lock:
                advance_all()
                try:
                    req = json.loads(body or b"{}")
                    if op in SD_OPS:
                        out = self.service_deployment_op(op, account, region, req)
                    else:
                        out = getattr(STATE.tasks, TASK_OPS[op])(ecs_backends[account][region], region, req)
                except task_model.ApiError as exc:
                    return error_response(start_response, proto, exc.status, exc.code, exc.message)
                except (ValueError, KeyError, TypeError) as exc:
                    return error_response(start_response, proto, 400, "InvalidParameterException", str(exc))
            return respond(start_response, 200, json.dumps(out).encode(), "application/x-amz-json-1.1")
        if service == "ecs":
            with STATE.lock:
                advance_all()
                status, headers, out = self.call_moto(environ, body)
                try:
                    req = json.loads(body or b"{}")
                except ValueError:
                    req = {}
                if op in ("CreateService", "UpdateService") and status < 300:
                    ecs_after(account, region, op, req, status)
                    out = self.reserialize_service(environ, req, out)
                elif op == "DescribeServices" and status < 300:
                    out = with_current_deployment(out)
            return respond(start_response, status, out, dict(headers).get("Content-Type", "application/x-amz-json-1.1"))
        req = {}
        if service == "cloudwatch":  # JSON 1.0 (boto3): alarm state changes are published
            try:
                req = json.loads(body or b"{}")
            except ValueError:
                req = {}
        before = self.alarm_state(account, region, op, req) if service == "cloudwatch" else None
        status, headers, out = self.call_moto(environ, body)
        if service == "cloudwatch" and status < 300:
            self.alarm_changed(account, region, op, req, before)
        start_response(f"{status} X", headers)
        return [out]

    def reserialize_service(self, environ, req, out):
        """The write's response shows the service as the simulator left it, not as moto did."""
        e = dict(environ)
        e["HTTP_X_AMZ_TARGET"] = "AmazonEC2ContainerServiceV20141113.DescribeServices"
        name = req.get("service") or req.get("serviceName")
        q = json.dumps({"cluster": req.get("cluster", "default"), "services": [name]}).encode()
        status, _, desc = self.call_moto(e, q)
        if status != 200:
            return out
        services = json.loads(desc).get("services") or []
        if not services:
            return out
        return with_current_deployment(json.dumps({"service": services[0]}).encode())

    def sts(self, environ, start_response, op, form, body):
        """STS through moto, with trust (registered roles and their external ids) and
        credential lifetimes the tests choose."""
        import re
        import urllib.parse
        if op == "AssumeRole":
            role = form.get("RoleArn", "")
            with STATE.lock:
                roles = dict(STATE.roles)
                lifetime = int(STATE.config["sts_credential_seconds"])
            caller = access_key_of(environ)
            if roles and role not in roles:
                return error_response(start_response, "query", 403, "AccessDenied",
                                      f"User: arn:aws:iam::{account_of(environ)}:user/{caller} is not authorized "
                                      f"to perform: sts:AssumeRole on resource: {role}")
            if roles and roles[role] is not None and form.get("ExternalId") != roles[role]:
                return error_response(start_response, "query", 403, "AccessDenied",
                                      f"User: arn:aws:iam::{account_of(environ)}:user/{caller} is not authorized "
                                      f"to perform: sts:AssumeRole on resource: {role} (external id does not match)")
            form = dict(form, DurationSeconds=str(lifetime))
            body = urllib.parse.urlencode(form).encode()
        status, headers, out = self.call_moto(environ, body)
        if op == "AssumeRole" and status < 300:
            text = out.decode(errors="replace")
            key = re.search(r"<AccessKeyId>([^<]+)</AccessKeyId>", text)
            exp = re.search(r"<Expiration>([^<]+)</Expiration>", text)
            if key and exp:
                with STATE.lock:
                    STATE.temp_keys[key.group(1)] = dt.datetime.fromisoformat(
                        exp.group(1).replace("Z", "+00:00")).timestamp()
        start_response(f"{status} X", headers)
        return [out]

    def service_deployment_op(self, op, account, region, req):
        backend = ecs_backends[account][region]
        services = {s.arn: s for s in backend.services.values()}
        if op == "ListServiceDeployments":
            return SDS.list_service_deployments(backend, region, req)
        if op == "DescribeServiceDeployments":
            return SDS.describe_service_deployments(backend, region, req, services)
        if op == "DescribeServiceRevisions":
            return SDS.describe_service_revisions(backend, region, req)
        rec = SDS.records.get(req.get("serviceDeploymentArn"))
        if rec is not None and rec["serviceArn"] in services:
            moving(account, region, services[rec["serviceArn"]])
        if op == "StopServiceDeployment":
            out = SDS.stop_service_deployment(sys.modules[__name__], backend, region, req, services)
            advance_all()
            return out
        out = SDS.continue_service_deployment(backend, region, req)
        if out.pop("_rollback", False):
            rec = SDS.records[out["serviceDeploymentArn"]]
            SDS.rollback(sys.modules[__name__], services[rec["serviceArn"]], rec,
                         "Rollback requested by ContinueServiceDeployment.", "hook", requested=True)
        advance_all()
        return out

    def alarm_state(self, account, region, op, req):
        """An alarm's state before SetAlarmState changes it (for the event's previousState)."""
        if op != "SetAlarmState":
            return None
        from moto.cloudwatch.models import cloudwatch_backends
        alarm = cloudwatch_backends[account][region].alarms.get(req.get("AlarmName", ""))
        return alarm.state_value if alarm else None

    def alarm_changed(self, account, region, op, req, before):
        if op == "SetAlarmState" and before is not None and before != req.get("StateValue"):
            STATE.events.alarm(account, region, req.get("AlarmName"), before, req.get("StateValue"),
                               req.get("StateReason", ""))

    def cbor(self, environ, start_response, op, body):
        try:
            payload = cbor2.loads(body) if body else {}
        except Exception as exc:  # malformed CBOR is the client's fault, as in AWS
            return error_response(start_response, "cbor", 400, "SerializationException", str(exc))
        account, region = account_of(environ), region_of(environ)
        before = self.alarm_state(account, region, op, payload or {})
        e = dict(environ)
        e["PATH_INFO"] = "/"
        e["REQUEST_METHOD"] = "POST"
        e["CONTENT_TYPE"] = "application/x-amz-json-1.0"
        e["HTTP_X_AMZ_TARGET"] = f"GraniteServiceVersion20100801.{op}"
        e.pop("HTTP_SMITHY_PROTOCOL", None)
        status, headers, out = self.call_moto(e, json.dumps(cbor_to_json(payload or {})).encode())
        try:
            data = json.loads(out) if out.strip() else {}
        except ValueError:
            data = {"__type": "InternalFailure", "message": out.decode(errors="replace")[:500]}
            status = 500
        if status >= 300:
            code = str(data.get("__type") or data.get("code") or "InternalFailure").split("#")[-1]
            msg = data.get("message") or data.get("Message") or ""
            return error_response(start_response, "cbor", status, code, msg)
        self.alarm_changed(account, region, op, payload or {}, before)
        return respond(start_response, status, cbor2.dumps(json_to_cbor(data)), "application/cbor",
                       [("smithy-protocol", "rpc-v2-cbor")])

    # ---- control API ------------------------------------------------------------------------

    def control(self, environ, start_response, what):
        method = environ.get("REQUEST_METHOD", "GET")
        raw = read_body(environ)
        try:
            req = json.loads(raw) if raw else {}
        except ValueError:
            return respond(start_response, 400, b'{"error":"body must be JSON"}')
        if method == "GET":
            req = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
        try:
            out = self.control_op(method, what, req)
        except (KeyError, ValueError, TypeError) as exc:
            return respond(start_response, 400, json.dumps({"error": str(exc)}).encode())
        if out is None:
            return respond(start_response, 404, json.dumps({"error": f"no control endpoint {method} /_sim/{what}"}).encode())
        return respond(start_response, 200, json.dumps(out, default=str).encode())

    def control_op(self, method, what, req):
        with STATE.lock:
            if what == "health":
                return {"ok": True}
            if what == "reset" and method == "POST":
                STATE.reset()
                e = {"PATH_INFO": "/moto-api/reset", "REQUEST_METHOD": "POST", "HTTP_HOST": "motoapi.amazonaws.com",
                     "SERVER_NAME": "localhost", "SERVER_PORT": "0", "wsgi.url_scheme": "http",
                     "wsgi.errors": sys.stderr, "QUERY_STRING": ""}
                self.call_moto(e, b"")
                return {"ok": True}
            if what == "config":
                if method == "POST":
                    for k, v in req.items():
                        if k not in STATE.config:
                            raise KeyError(f"unknown config key {k!r}; known: {sorted(STATE.config)}")
                        STATE.config[k] = float(v)
                return STATE.config
            if what == "behaviours":
                if method == "POST":
                    kind = req["kind"]
                    if kind not in ("healthy", "slow", "crash", "never_stable"):
                        raise ValueError("kind must be healthy, slow, crash or never_stable")
                    b = {"kind": kind}
                    if "seconds" in req:
                        b["seconds"] = float(req["seconds"])
                    STATE.behaviours[req["tag"]] = b
                return STATE.behaviours
            if what == "faults":
                if method == "POST":
                    STATE.faults.append(Fault(req))
                elif method == "DELETE":
                    STATE.faults = []
                return [f.describe() for f in STATE.faults]
            if what == "calls":
                if method == "DELETE":
                    STATE.calls = {}
                    STATE.call_log.clear()
                return STATE.calls
            if what == "tasks":
                if method == "POST":
                    return STATE.tasks.add_rule(req)
                advance_all()
                STATE.tasks.advance(time.time())
                return STATE.tasks.dump()
            if what == "network" and method == "POST":
                # The default VPC moto makes in every region: subnets and its default security
                # group, for services and tasks with awsvpc networking (ECS checks they exist).
                from moto.ec2.models import ec2_backends
                ec2 = ec2_backends[ACCOUNT][req["region"]]
                vpc = next(v for v in ec2.vpcs.values() if v.is_default)
                subnets = sorted(sn.id for sn in ec2.describe_subnets() if sn.vpc_id == vpc.id)
                groups = [g.id for g in ec2.describe_security_groups() if g.vpc_id == vpc.id and g.name == "default"]
                return {"vpc": vpc.id, "subnets": subnets, "security_groups": groups}
            if what == "logs" and method == "POST":
                backend = logs_backends[ACCOUNT][req["region"]]
                group, stream = req["group"], req.get("stream", "sim")
                if group not in backend.groups:
                    backend.create_log_group(group, {})
                if stream not in backend.groups[group].streams:
                    backend.create_log_stream(group, stream)
                events = sorted(({"timestamp": int(e["timestamp"]), "message": str(e["message"])}
                                 for e in req["events"]), key=lambda e: e["timestamp"])
                _, rejected = backend.put_log_events(group, stream, events)
                if rejected:
                    # As CloudWatch Logs: only events from the last 14 days to 2 hours ahead.
                    raise ValueError(f"events outside what CloudWatch Logs accepts: {rejected}")
                return {"ok": True, "events": len(events)}
            if what == "roles" and method == "POST":
                STATE.roles[req["role_arn"]] = req.get("external_id")
                return STATE.roles
            if what == "events" and method == "POST":
                return STATE.events.configure(req, advance_all)
            if what == "events":
                return {"target": STATE.events.target, "published": STATE.events.published}
            if what == "service-deployments":
                advance_all()
                return SDS.dump()
            if what == "service-deployments/rollback" and method == "POST":
                return SDS.add_rule(req)
            if what == "services" and method == "POST":
                return bulk_services(req)
            if what == "calls/log":
                since = float(req.get("since", 0))
                out = []
                for t, op, f, k, c in reversed(STATE.call_log):  # newest first, in time order
                    if t < since:
                        break
                    if req.get("operation", op) == op and req.get("cluster", c) == c:
                        out.append({"at": t, "operation": op, "fault": f, "access_key": k, "cluster": c})
                out.reverse()
                return out
        return None


def serve(host, port):
    """Serves one simulator on (host, port) until killed; returns never."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server(host, port, App(), threaded=True, request_handler=MotoRequestHandler)
    bound_host, bound_port = server.server_address[:2]
    return server, f"http://{bound_host}:{bound_port}"


def warm_up():
    """Imports moto's lazily loaded backends and answers one request per service, so a forked
    simulator starts with everything in memory (the import is most of a cold start)."""
    app = App()
    for target, host, scope in (("AmazonEC2ContainerServiceV20141113.ListClusters", "ecs", "ecs"),
                                ("AmazonEC2ContainerRegistry_V20150921.DescribeRepositories", "api.ecr", "ecr"),
                                ("GraniteServiceVersion20100801.DescribeAlarms", "monitoring", "monitoring"),
                                ("Logs_20140328.DescribeLogGroups", "logs", "logs")):
        environ = {
            "PATH_INFO": "/", "REQUEST_METHOD": "POST", "HTTP_HOST": f"{host}.us-east-1.amazonaws.com",
            "SERVER_NAME": "localhost", "SERVER_PORT": "0", "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr, "QUERY_STRING": "", "HTTP_X_AMZ_TARGET": target,
            "CONTENT_TYPE": "application/x-amz-json-1.1",
            "HTTP_AUTHORIZATION": f"AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/{scope}/aws4_request, "
                                  "SignedHeaders=host, Signature=x",
        }
        try:
            app.call_moto(environ, b"{}")
        except Exception:  # warming is best effort; a real request will say what is wrong
            pass
    # Forget whatever the warm-up created.
    e = {"PATH_INFO": "/moto-api/reset", "REQUEST_METHOD": "POST", "HTTP_HOST": "motoapi.amazonaws.com",
         "SERVER_NAME": "localhost", "SERVER_PORT": "0", "wsgi.url_scheme": "http",
         "wsgi.errors": sys.stderr, "QUERY_STRING": ""}
    app.call_moto(e, b"")
    STATE.reset()


def zygote(host):
    """Fork server for test suites: imports everything once, then forks one isolated simulator
    per line `fork` read on stdin and prints `<pid> <url>` for it. Each child has its own copy of
    moto's state (copy-on-write), so tests stay as isolated as with one process each, without
    paying the ~2 s import every time. Exits, killing its children, when stdin closes (the test
    binary that started it is gone)."""
    import ctypes
    import os
    import signal

    warm_up()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    children = []
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "fork":
            print(f"error unknown command {line.strip()!r}", flush=True)
            continue
        pid = os.fork()
        if pid == 0:
            try:
                # Die with the zygote (its main thread is the only one it has).
                ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
            except (OSError, AttributeError):
                pass
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            random.seed()
            server, url = serve(host, 0)
            print(f"{os.getpid()} {url}", flush=True)
            try:
                server.serve_forever()
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=4566)
    ap.add_argument("--zygote", action="store_true",
                    help="fork server for test suites: one simulator per `fork` line on stdin")
    args = ap.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        ap.error("the simulator only listens on loopback")
    if args.zygote:
        zygote(args.host)
        return
    server, url = serve(args.host, args.port)
    print(url, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
