"""EventBridge events for the simulator, delivered to an SQS queue as an EventBridge rule with
that queue as its target would deliver them (deploy/events-rule.json is the real rule).

Published, in EventBridge's envelope (version, id, detail-type, source, account, time, region,
resources, detail), when the simulator sees the change:
- `CloudWatch Alarm State Change` (source aws.cloudwatch) on SetAlarmState: `alarmName`,
  `state.value`, `previousState.value`;
- `ECS Deployment State Change` (source aws.ecs) when a deployment starts
  (SERVICE_DEPLOYMENT_IN_PROGRESS), completes (SERVICE_DEPLOYMENT_COMPLETED) or fails
  (SERVICE_DEPLOYMENT_FAILED), with `deploymentId`, `updatedAt`, `reason`.

While a target queue is set, a ticker brings every deployment up to date every 100 ms, so
deployment events come when the change happens rather than on the next ECS call.
"""

import datetime as dt
import json
import threading
import time
import uuid
from urllib.parse import urlparse

from moto.sqs.models import Message, sqs_backends


def _iso(t=None):
    t = t or dt.datetime.now(dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class Events:
    def __init__(self, state):
        self.state = state
        self.ticker = None
        self.reset()

    def reset(self):
        self.target = None  # (account, region, queue name)
        self.published = 0

    def configure(self, req, advance_all):
        """`{"queue_url": ..., "region": ...}`: where the rule delivers; None stops it."""
        url = req.get("queue_url")
        if not url:
            self.target = None
            return {"target": None}
        parts = [p for p in urlparse(url).path.split("/") if p]
        if len(parts) < 2:
            raise ValueError("queue_url must end in /<account>/<queue name>")
        self.target = (parts[-2], req["region"], parts[-1])
        if self.ticker is None:
            def tick():
                while True:
                    time.sleep(0.1)
                    if self.target is None:
                        continue
                    with self.state.lock:
                        try:
                            advance_all()
                        except Exception:  # the next call reports whatever is wrong
                            pass

            self.ticker = threading.Thread(target=tick, name="events-ticker", daemon=True)
            self.ticker.start()
        return {"target": list(self.target)}

    def publish(self, account, region, detail_type, source, resources, detail):
        if self.target is None:
            return
        t_account, t_region, name = self.target
        body = {"version": "0", "id": str(uuid.uuid4()), "detail-type": detail_type, "source": source,
                "account": account, "time": _iso(), "region": region, "resources": resources,
                "detail": detail}
        try:
            # SendMessage for a standard queue without its per-message cost in moto (which
            # computes every queue attribute, counting all messages, to read one).
            queue = sqs_backends[t_account][t_region].get_queue(name)
            message = Message(str(uuid.uuid4()), json.dumps(body))
            message.mark_sent(delay_seconds=int(queue.delay_seconds or 0))
            queue.add_message(message)
            self.published += 1
        except Exception:  # a queue deleted under the rule: EventBridge drops the event too
            pass

    def alarm(self, account, region, name, previous, value, reason):
        arn = f"arn:aws:cloudwatch:{region}:{account}:alarm:{name}"
        self.publish(account, region, "CloudWatch Alarm State Change", "aws.cloudwatch", [arn], {
            "alarmName": name,
            "state": {"value": value, "reason": reason, "timestamp": _iso()},
            "previousState": {"value": previous},
        })

    def deployment(self, service_arn, event_name, deployment_id, reason):
        parts = service_arn.split(":")
        account, region = parts[4], parts[3]
        self.publish(account, region, "ECS Deployment State Change", "aws.ecs", [service_arn], {
            "eventType": "ERROR" if event_name.endswith("FAILED") else "INFO",
            "eventName": event_name,
            "deploymentId": deployment_id,
            "updatedAt": _iso(),
            "reason": reason,
        })
