"""The simulator's EventBridge -> SQS events through boto3 (run by tests/simulator.rs)."""

import json
import unittest

import boto3

from test_service_deployments import Sim, wait_for

SIM = None


def setUpModule():
    global SIM
    SIM = Sim()


def tearDownModule():
    SIM.stop()


class Events(unittest.TestCase):
    def client(self, name):
        return boto3.client(name, endpoint_url=SIM.url, region_name="us-east-1",
                            aws_access_key_id="test", aws_secret_access_key="test")

    def test_alarm_changes_and_deployments_arrive_in_eventbridges_envelope(self):
        SIM.control("reset", {})
        SIM.control("config", {"rollout_seconds": 0.2})
        sqs, cw, ecs = self.client("sqs"), self.client("cloudwatch"), self.client("ecs")
        url = sqs.create_queue(QueueName="events")["QueueUrl"]
        SIM.control("events", {"queue_url": url, "region": "us-east-1"})
        cw.put_metric_alarm(AlarmName="p99", MetricName="m", Namespace="n", Statistic="Sum", Period=60,
                            EvaluationPeriods=1, Threshold=1.0, ComparisonOperator="GreaterThanThreshold")
        cw.set_alarm_state(AlarmName="p99", StateValue="ALARM", StateReason="test")
        cw.set_alarm_state(AlarmName="p99", StateValue="ALARM", StateReason="unchanged: no event")
        ecs.create_cluster(clusterName="c")
        td = ecs.register_task_definition(family="f", containerDefinitions=[
            {"name": "app", "image": "x/app:a", "memory": 128}])["taskDefinition"]["taskDefinitionArn"]
        ecs.create_service(cluster="c", serviceName="s", taskDefinition=td, desiredCount=1)
        seen = []

        def received():
            for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
                seen.append(json.loads(m["Body"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            names = [e["detail"].get("eventName") for e in seen]
            return "SERVICE_DEPLOYMENT_COMPLETED" in names

        wait_for("the deployment's completion event", received)
        alarms = [e for e in seen if e["detail-type"] == "CloudWatch Alarm State Change"]
        self.assertEqual(len(alarms), 1, "one event per state change")
        a = alarms[0]
        self.assertEqual((a["source"], a["detail"]["alarmName"], a["detail"]["state"]["value"],
                          a["detail"]["previousState"]["value"]), ("aws.cloudwatch", "p99", "ALARM", "OK"))
        self.assertTrue(a["resources"][0].endswith(":alarm:p99"))
        deps = [e for e in seen if e["detail-type"] == "ECS Deployment State Change"]
        self.assertEqual([e["detail"]["eventName"] for e in deps],
                         ["SERVICE_DEPLOYMENT_IN_PROGRESS", "SERVICE_DEPLOYMENT_COMPLETED"])
        self.assertTrue(all(e["resources"] == [deps[0]["resources"][0]] for e in deps))
        self.assertTrue(deps[0]["resources"][0].endswith(":service/c/s"))
        self.assertEqual({e["version"] for e in seen}, {"0"})


if __name__ == "__main__":
    unittest.main()
