"""ecs-gitops beside the tools teams use today, on the same simulator, in one run.

The change: 10 services of one cluster move from release A to B. Done by
  1. ecs-gitops: a commit naming B -> the environment InSync with B verified (bake 1s);
  2. fabfuel's ecs-deploy (PyPI, pinned): `ecs deploy CLUSTER SERVICE --tag B --rollback` for
     each service, as its users script several services;
  3. the manual steps as an AWS CLI script (awscli from PyPI, pinned): per service describe the
     service and its task definition, register a revision with image B, update the service;
     then `aws ecs wait services-stable`.
Each runs on a fresh simulator whose services have ECS' deployment circuit breaker with
rollback on (the usual production setting). Then release B crash-loops: what each tool says,
its exit code, and how long until every service runs A again.

Started by `scripts/bench peers`; prints a Markdown table (median of --samples runs).
"""

import os
import statistics
import subprocess
import tempfile
import time

import simkit

REGION = "me-south-1"
A, B = "a" * 40, "b" * 40
SERVICES = [f"svc{i}" for i in range(10)]
PEER_TIMEOUT = 120  # seconds any one tool gets for one change


def tool_env(sim, venv):
    return dict(sim.env(REGION), AWS_DEFAULT_REGION=REGION, PATH=os.path.join(venv, "bin") + os.pathsep + os.environ["PATH"])


def world(tmp, crash):
    sim = simkit.Sim(os.path.join(tmp, "sim.log"))
    sim.control("config", {"rollout_seconds": 0.5, "task_fail_seconds": 0.2})
    if crash:
        sim.control("behaviours", {"tag": B, "kind": "crash"})
    ecs, ecr, cw = (sim.client(n, REGION) for n in ("ecs", "ecr", "cloudwatch"))
    ecs.create_cluster(clusterName="c")
    simkit.put_images(ecr, "app", [A, B])
    for name in SERVICES:
        td = ecs.register_task_definition(
            family=name, cpu="256", memory="512",
            containerDefinitions=[{"name": "app", "image": simkit.image_uri(REGION, "app", A), "essential": True}],
        )["taskDefinition"]["taskDefinitionArn"]
        ecs.create_service(cluster="c", serviceName=name, taskDefinition=td, desiredCount=2,
                           deploymentConfiguration={"maximumPercent": 200, "minimumHealthyPercent": 100,
                                                    "deploymentCircuitBreaker": {"enable": True, "rollback": True}})
    simkit.put_alarm(cw, "app-5xx")
    wait_running(ecs, A, 60)
    sim.control("calls")
    sim.reset_calls()
    return sim, ecs


def running(ecs, tag):
    """Every service steady on a revision whose image is `tag`."""
    for i in range(0, len(SERVICES), 10):
        for s in ecs.describe_services(cluster="c", services=SERVICES[i:i + 10])["services"]:
            deps = s["deployments"]
            if len(deps) != 1 or deps[0].get("rolloutState") != "COMPLETED" or s["runningCount"] != s["desiredCount"]:
                return False
            td = ecs.describe_task_definition(taskDefinition=deps[0]["taskDefinition"])["taskDefinition"]
            if not td["containerDefinitions"][0]["image"].endswith(":" + tag):
                return False
    return True


def wait_running(ecs, tag, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if running(ecs, tag):
            return time.time()
        time.sleep(0.1)
    return None


def calls(sim):
    c = sim.control("calls")
    return {k: v for k, v in sorted(c.items()) if not k.startswith("_")}


def run_ecs_gitops(tmp, sim, ecs, crash):
    repo = simkit.Repo(os.path.join(tmp, "repo"))
    text = lambda rel: (f"environment: prod\nregion: {REGION}\ncluster: c\nrelease: {rel}\nservices:\n"
                        + "".join(f"  {s}:\n    repository: app\n    container: app\n" for s in SERVICES)
                        + "verify:\n  alarms: [app-5xx]\n  bake: 1s\n  rollout_timeout: 60s\n")
    repo.write("prod", text(A))
    repo.commit("A")
    d = simkit.Daemon(repo.path, sim.env(REGION), os.path.join(tmp, "daemon.log"), interval="10s")
    try:
        deadline = time.time() + 60
        while (d.env("prod") or {}).get("phase") != "InSync" and time.time() < deadline:
            time.sleep(0.05)
        sim.reset_calls()
        repo.write("prod", text(B))
        t0 = time.time()
        repo.commit("B")
        deadline = t0 + PEER_TIMEOUT
        said = ""
        while time.time() < deadline:
            e = d.env("prod") or {}
            if e.get("phase") == "InSync" and e.get("last_good_release") == B:
                said = "InSync, B verified"
                break
            if e.get("phase") == "Rejected":
                said = f"Rejected ({e.get('rejected_reason')}): {e.get('message', '')[:90]}"
                break
            time.sleep(0.05)
        took = time.time() - t0
        return {"took": took, "exit": "-", "said": said or "no verdict in time", "t0": t0}
    finally:
        d.stop()


def run_ecs_deploy(tmp, sim, ecs, crash, venv):
    env = tool_env(sim, venv)
    t0 = time.time()
    codes, outs = [], []
    for s in SERVICES:
        out = subprocess.run(["ecs", "deploy", "c", s, "--tag", B, "--timeout", "60", "--rollback"],
                             env=env, capture_output=True, text=True, timeout=PEER_TIMEOUT)
        codes.append(out.returncode)
        outs.append((out.stdout + out.stderr).strip().splitlines()[-1:] or [""])
    took = time.time() - t0
    worst = max(codes)
    said = outs[codes.index(worst)][0][:90]
    return {"took": took, "exit": worst, "said": said, "t0": t0}


CLI_SCRIPT = r'''
set -u
for s in $SERVICES; do
  td=$(aws ecs describe-services --cluster c --services "$s" --query 'services[0].taskDefinition' --output text) || exit 1
  defs=$(aws ecs describe-task-definition --task-definition "$td" --query 'taskDefinition.containerDefinitions') || exit 1
  new=$(printf '%s' "$defs" | python3 -c 'import json,sys; d=json.load(sys.stdin); d[0]["image"]=d[0]["image"].rsplit(":",1)[0]+":'"$TAG"'"; print(json.dumps(d))')
  arn=$(aws ecs register-task-definition --family "$s" --cpu 256 --memory 512 --container-definitions "$new" --query 'taskDefinition.taskDefinitionArn' --output text) || exit 1
  aws ecs update-service --cluster c --service "$s" --task-definition "$arn" > /dev/null || exit 1
done
aws ecs wait services-stable --cluster c --services $SERVICES && echo "services stable"
'''


def run_cli(tmp, sim, ecs, crash, venv):
    env = dict(tool_env(sim, venv), SERVICES=" ".join(SERVICES), TAG=B)
    t0 = time.time()
    try:
        out = subprocess.run(["bash", "-c", CLI_SCRIPT], env=env, capture_output=True, text=True, timeout=PEER_TIMEOUT)
        code, said = out.returncode, ((out.stdout + out.stderr).strip().splitlines() or [""])[-1][:90]
    except subprocess.TimeoutExpired:
        code, said = "killed", f"still waiting after {PEER_TIMEOUT}s"
    return {"took": time.time() - t0, "exit": code, "said": said, "t0": t0}


def one(tool, crash, tmp, venv):
    sim, ecs = world(tmp, crash)
    try:
        if tool == "ecs-gitops":
            r = run_ecs_gitops(tmp, sim, ecs, crash)
        elif tool == "ecs-deploy":
            r = run_ecs_deploy(tmp, sim, ecs, crash, venv)
        else:
            r = run_cli(tmp, sim, ecs, crash, venv)
        r["calls"] = calls(sim)
        on_b, on_a = running(ecs, B), running(ecs, A)
        r["runs"] = "B" if on_b else ("A" if on_a else "mixed/unsteady")
        if crash:
            t = wait_running(ecs, A, 60)
            r["back_on_a"] = (t - r["t0"]) if t else None
        return r
    finally:
        sim.stop()


def main():
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--venv", required=True, help="virtualenv with ecs-deploy and awscli")
    args = ap.parse_args()
    tools = ["ecs-gitops", "ecs-deploy", "aws-cli"]
    root = tempfile.mkdtemp(prefix="ecs-gitops-peers-")
    rows = []
    for crash in (False, True):
        for tool in tools:
            results = []
            for i in range(args.samples if not crash else 1):
                tmp = os.path.join(root, f"{tool}-{crash}-{i}")
                os.makedirs(tmp)
                results.append(one(tool, crash, tmp, args.venv))
            rows.append((tool, crash, results))
            r = results[-1]
            print(f"{tool:<11} {'crash' if crash else 'healthy':<8} median {statistics.median(x['took'] for x in results):6.1f}s "
                  f"exit {r['exit']} runs {r['runs']} said: {r['said']}", flush=True)
    print()
    print("| tool | release B | wall time (median) | exit | what it said | what ran after | AWS calls |")
    print("|---|---|---|---|---|---|---|")
    for tool, crash, results in rows:
        r = results[-1]
        total = sum(r["calls"].values())
        ops = ", ".join(f"{k.split(':')[1]} {v}" for k, v in r["calls"].items())
        extra = ""
        if crash:
            extra = f"; back on A after {r['back_on_a']:.1f}s" if r.get("back_on_a") else "; not back on A within 60s"
        print(f"| {tool} | {'crash-loops' if crash else 'healthy'} | {statistics.median(x['took'] for x in results):.1f} s (n={len(results)}) "
              f"| {r['exit']} | {r['said']} | {r['runs']}{extra} | {total}: {ops} |")


if __name__ == "__main__":
    main()
