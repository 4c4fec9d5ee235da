"""The simulator's service deployments through boto3 (run by tests/simulator.rs, or by hand:
`.aws-sim/venv/bin/python -m unittest scripts/aws_sim/test_service_deployments.py`).

Every wait polls with a deadline; each test gets a fresh simulator state (POST /_sim/reset)."""

import json
import os
import subprocess
import sys
import time
import unittest
import urllib.request

import boto3
import botocore.exceptions

HERE = os.path.dirname(os.path.abspath(__file__))
DEADLINE = 30.0


class Sim:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "sim.py"), "--port", "0"],
                                     stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()

    def control(self, path, body=None, method=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + "/_sim/" + path, data=data,
                                     method=method or ("POST" if body is not None else "GET"))
        return json.loads(urllib.request.urlopen(req, timeout=10).read())

    def stop(self):
        self.proc.kill()
        self.proc.wait()


SIM = None


def setUpModule():
    global SIM
    SIM = Sim()


def tearDownModule():
    SIM.stop()


def wait_for(what, f):
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        got = f()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out after {DEADLINE}s waiting for {what}")


class ServiceDeployments(unittest.TestCase):
    def setUp(self):
        SIM.control("reset", {})
        SIM.control("config", {"stage_seconds": 0.1, "minute_seconds": 0.5, "cleanup_seconds": 0.2,
                               "rollout_seconds": 0.2, "task_fail_seconds": 0.05})
        self.ecs = boto3.client("ecs", endpoint_url=SIM.url, region_name="us-east-1",
                                aws_access_key_id="test", aws_secret_access_key="test")
        self.ecs.create_cluster(clusterName="c")
        self.tds = [self.ecs.register_task_definition(
            family="f", containerDefinitions=[{"name": "app", "image": f"x/app:{t}", "memory": 128}]
        )["taskDefinition"]["taskDefinitionArn"] for t in ("a", "b", "crash")]

    def service(self, config):
        self.ecs.create_service(cluster="c", serviceName="s", taskDefinition=self.tds[0], desiredCount=2,
                                deploymentConfiguration=config)
        wait_for("first deployment", lambda: self.current()["status"] == "SUCCESSFUL")

    def current(self):
        svc = self.ecs.describe_services(cluster="c", services=["s"])["services"][0]
        return self.ecs.describe_service_deployments(
            serviceDeploymentArns=[svc["currentServiceDeployment"]])["serviceDeployments"][0]

    def follow(self, until):
        """Stages and production weights seen until the service deployment is in `until`."""
        seen = []

        def step():
            d = self.current()
            cur = (d.get("lifecycleStage"), d["targetServiceRevision"].get("requestedProductionTrafficWeight"))
            if not seen or seen[-1] != cur:
                seen.append(cur)
            return d if d["status"] in until else None

        return wait_for(f"status in {until}", step), seen

    def test_blue_green_moves_through_the_lifecycle_stages_and_keeps_its_configuration(self):
        config = {"strategy": "BLUE_GREEN", "bakeTimeInMinutes": 1}
        self.service(config)
        svc = self.ecs.describe_services(cluster="c", services=["s"])["services"][0]
        self.assertEqual(svc["deploymentConfiguration"]["strategy"], "BLUE_GREEN")
        self.assertEqual(svc["deploymentConfiguration"]["bakeTimeInMinutes"], 1)
        self.ecs.update_service(cluster="c", service="s", taskDefinition=self.tds[1])
        d, seen = self.follow(("SUCCESSFUL",))
        stages = [s for s, _ in seen]
        order = ["RECONCILE_SERVICE", "PRE_SCALE_UP", "SCALE_UP", "POST_SCALE_UP", "TEST_TRAFFIC_SHIFT",
                 "POST_TEST_TRAFFIC_SHIFT", "PRODUCTION_TRAFFIC_SHIFT", "POST_PRODUCTION_TRAFFIC_SHIFT",
                 "BAKE_TIME", "CLEAN_UP"]
        self.assertEqual([s for s in order if s in stages], [s for s in stages if s in order])
        for s in ("SCALE_UP", "PRODUCTION_TRAFFIC_SHIFT", "BAKE_TIME", "CLEAN_UP"):
            self.assertIn(s, stages)
        self.assertEqual(d["targetServiceRevision"]["requestedProductionTrafficWeight"], 100.0)
        self.assertIn("finishedAt", d)
        rev = self.ecs.describe_service_revisions(
            serviceRevisionArns=[d["targetServiceRevision"]["arn"]])["serviceRevisions"][0]
        self.assertEqual(rev["taskDefinition"], self.tds[1])
        src = self.ecs.describe_service_revisions(
            serviceRevisionArns=[d["sourceServiceRevisions"][0]["arn"]])["serviceRevisions"][0]
        self.assertEqual(src["taskDefinition"], self.tds[0])
        listed = self.ecs.list_service_deployments(cluster="c", service="s")["serviceDeployments"]
        self.assertEqual(listed[0]["serviceDeploymentArn"], d["serviceDeploymentArn"], "newest first")
        self.assertEqual(len(listed), 2)
        only = self.ecs.list_service_deployments(cluster="c", service="s", status=["SUCCESSFUL"],
                                                 createdAt={"after": d["createdAt"]})["serviceDeployments"]
        self.assertEqual([x["serviceDeploymentArn"] for x in only], [d["serviceDeploymentArn"]])
        svc = self.ecs.describe_services(cluster="c", services=["s"])["services"][0]
        self.assertEqual([x["taskDefinition"] for x in svc["deployments"]], [self.tds[1]])

    def shifts(self, config):
        """Production weights the target revision is given, in order, during one deployment."""
        self.service(config)
        self.ecs.update_service(cluster="c", service="s", taskDefinition=self.tds[1])
        _, seen = self.follow(("SUCCESSFUL",))
        shifted = []
        for _, w in seen:
            if w and (not shifted or shifted[-1] != w):
                shifted.append(w)
        return shifted

    def test_linear_shifts_production_traffic_in_equal_steps(self):
        self.assertEqual(self.shifts({"strategy": "LINEAR", "linearConfiguration": {
            "stepPercent": 25.0, "stepBakeTimeInMinutes": 1}}), [25.0, 50.0, 75.0, 100.0])

    def test_canary_shifts_its_percentage_then_the_rest(self):
        self.assertEqual(self.shifts({"strategy": "CANARY", "canaryConfiguration": {
            "canaryPercent": 10.0, "canaryBakeTimeInMinutes": 1}}), [10.0, 100.0])

    def test_stop_with_rollback_puts_the_source_revision_back_and_a_finished_one_cannot_be_stopped(self):
        self.service({"strategy": "CANARY",
                      "canaryConfiguration": {"canaryPercent": 20.0, "canaryBakeTimeInMinutes": 60}})
        self.ecs.update_service(cluster="c", service="s", taskDefinition=self.tds[1])
        d = wait_for("the canary", lambda: (lambda d: d if d["targetServiceRevision"].get(
            "requestedProductionTrafficWeight") == 20.0 else None)(self.current()))
        self.ecs.stop_service_deployment(serviceDeploymentArn=d["serviceDeploymentArn"], stopType="ROLLBACK")
        self.assertIn(self.current()["status"], ("ROLLBACK_REQUESTED", "ROLLBACK_IN_PROGRESS"))
        d, _ = self.follow(("ROLLBACK_SUCCESSFUL",))
        self.assertEqual(d["rollback"]["serviceRevisionArn"], d["sourceServiceRevisions"][0]["arn"])
        svc = self.ecs.describe_services(cluster="c", services=["s"])["services"][0]
        self.assertEqual(svc["taskDefinition"], self.tds[0])
        self.assertEqual([x["taskDefinition"] for x in svc["deployments"]], [self.tds[0]])
        with self.assertRaises(botocore.exceptions.ClientError) as e:
            self.ecs.stop_service_deployment(serviceDeploymentArn=d["serviceDeploymentArn"], stopType="ROLLBACK")
        self.assertEqual(e.exception.response["Error"]["Code"], "ClientException")

    def test_ecs_rolls_back_by_itself_at_the_stage_a_test_names(self):
        self.service({"strategy": "BLUE_GREEN"})
        SIM.control("service-deployments/rollback", {"service": "c/s", "at_stage": "PRODUCTION_TRAFFIC_SHIFT",
                                                     "kind": "alarm", "alarm": "p99", "reason": "alarm p99"})
        self.ecs.update_service(cluster="c", service="s", taskDefinition=self.tds[1])
        d, seen = self.follow(("ROLLBACK_SUCCESSFUL", "SUCCESSFUL"))
        self.assertEqual(d["status"], "ROLLBACK_SUCCESSFUL")
        self.assertEqual(d["lifecycleStage"], "PRODUCTION_TRAFFIC_SHIFT")
        self.assertEqual(d["rollback"]["reason"], "alarm p99")
        self.assertEqual(d["alarms"]["triggeredAlarmNames"], ["p99"])
        self.assertNotIn("BAKE_TIME", [s for s, _ in seen])

    def test_rolling_deployments_have_records_and_the_circuit_breaker_rolls_them_back(self):
        SIM.control("behaviours", {"tag": "crash", "kind": "crash"})
        self.service({"deploymentCircuitBreaker": {"enable": True, "rollback": True}})
        self.ecs.update_service(cluster="c", service="s", taskDefinition=self.tds[1])
        d, _ = self.follow(("SUCCESSFUL",))
        self.assertNotIn("rollback", d)
        self.ecs.update_service(cluster="c", service="s", taskDefinition=self.tds[2])
        d, _ = self.follow(("ROLLBACK_SUCCESSFUL", "SUCCESSFUL", "STOPPED"))
        self.assertEqual(d["status"], "ROLLBACK_SUCCESSFUL")
        self.assertEqual(d["deploymentCircuitBreaker"]["status"], "TRIGGERED")
        svc = self.ecs.describe_services(cluster="c", services=["s"])["services"][0]
        self.assertEqual(svc["taskDefinition"], self.tds[1])

    def test_a_pause_hook_waits_for_continue(self):
        self.service({"strategy": "BLUE_GREEN", "lifecycleHooks": [{
            "targetType": "PAUSE", "lifecycleStages": ["POST_SCALE_UP"],
            "timeoutConfiguration": {"timeoutInMinutes": 600, "action": "ROLLBACK"}}]})
        self.ecs.update_service(cluster="c", service="s", taskDefinition=self.tds[1])
        d = wait_for("the pause", lambda: (lambda d: d if d.get("lifecycleHookDetails") else None)(self.current()))
        hook = d["lifecycleHookDetails"][0]
        self.assertEqual((hook["status"], hook["targetType"], hook["timeoutAction"]),
                         ("AWAITING_ACTION", "PAUSE", "ROLLBACK"))
        self.assertEqual(d["lifecycleStage"], "POST_SCALE_UP")
        time.sleep(0.3)  # not a wait for a condition: shows the stage does not move while paused
        self.assertEqual(self.current()["lifecycleStage"], "POST_SCALE_UP")
        self.ecs.continue_service_deployment(serviceDeploymentArn=d["serviceDeploymentArn"],
                                             hookId=hook["hookId"], action="CONTINUE")
        d, _ = self.follow(("SUCCESSFUL",))
        self.assertEqual(d["lifecycleHookDetails"][0]["status"], "SUCCEEDED")


if __name__ == "__main__":
    unittest.main()
