"""The ecs-gitops demo: a deploy, a promotion and an automatic rollback, on this machine.

Started by scripts/demo. It starts the local AWS simulator, creates in it what
desired-state/*.yaml names (clusters, services, ECR images, alarms), copies desired-state/ into
a fresh git repository with short bake times, starts `ecs-gitops run` on it, and then drives a
release through staging and prod and a bad release into a rollback, narrating each step. It
exits 0 only if every step happened as narrated, and stops everything it started (also on
Ctrl-C), unless --keep is given.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import simkit
from simkit import ROOT, Failed as DemoFailed

REGION = "me-south-1"
GOOD = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
BAD = "badbadbadbad0123456789abcdef0123456789ab"
STEP_TIMEOUT = 45


def say(msg=""):
    print(msg, flush=True)


class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"status":"ok"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Demo:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="ecs-gitops-demo-")
        self.sim = None
        self.daemon = None
        self.repo = None
        self.health = None

    # ---- setup ---------------------------------------------------------------------------

    def start_sim(self):
        self.sim = simkit.Sim(os.path.join(self.tmp, "aws-sim.log"))
        self.sim.control("config", {"rollout_seconds": 1.5})
        say(f"    local AWS simulator at {self.sim.url}")

    def create_world(self):
        ecs, ecr, cw = (self.sim.client(n, REGION) for n in ("ecs", "ecr", "cloudwatch"))
        files = {}
        for env in ("staging", "prod"):
            with open(os.path.join(ROOT, "desired-state", f"{env}.yaml")) as f:
                files[env] = f.read()
        initial = re.search(r"^release: (\w+)", files["prod"], re.M).group(1)
        self.initial = initial
        simkit.put_images(ecr, "saas-backend", (initial, GOOD, BAD))
        image = simkit.image_uri(REGION, "saas-backend", initial)
        for env, text in files.items():
            cluster = re.search(r"^cluster: (\S+)", text, re.M).group(1)
            ecs.create_cluster(clusterName=cluster)
            for service in ("saas-backend", "saas-worker"):
                simkit.create_service(ecs, cluster, service, f"{env}-{service}", image)
            for alarm in re.search(r"alarms: \[(.*)\]", text).group(1).split(","):
                simkit.put_alarm(cw, alarm.strip())
        self.cw = cw
        for env in files:
            # The log groups verify.logs reads (the backend's logs; nothing wrong in them yet).
            self.sim.control("logs", {"region": REGION, "group": f"/{env}/backend",
                                      "events": [{"timestamp": int(time.time() * 1000), "message": "INFO started"}]})
        say("    created clusters saas-staging and saas-prod, services saas-backend and saas-worker in each,")
        say(f"    ECR images saas-backend:{initial[:7]}, :{GOOD[:7]} and :{BAD[:7]}, and the four alarms")
        return files

    def start_health(self):
        self.health = ThreadingHTTPServer(("127.0.0.1", 0), Health)
        threading.Thread(target=self.health.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.health.server_address[1]}/api/v1/health"

    def make_repo(self, files, health_url):
        self.repo = simkit.Repo(os.path.join(self.tmp, "desired-state-repo"))
        for env, text in files.items():
            # Short bakes for the demo, and a health endpoint that exists on this machine.
            text = re.sub(r"bake: \S+", "bake: 6s", text)
            text = re.sub(r"- url: \S+", f"- url: {health_url}", text)
            self.repo.write(env, text)
        self.repo.commit("desired state as in the ecs-gitops repository, with 6s bakes")
        say(f"    desired-state repository at {self.repo.path}")

    def commit_release(self, env, release, message):
        self.repo.write(env, re.sub(r"^release: \w+", f"release: {release}", self.repo.read(env), count=1, flags=re.M))
        return self.repo.commit(message)[:7]

    def start_daemon(self):
        self.daemon = simkit.Daemon(self.repo.path, self.sim.env(REGION), os.path.join(self.tmp, "ecs-gitops.log"),
                                    interval="2s", port=self.args.port)
        self.url = self.daemon.url
        self.daemon_log = self.daemon.log_path
        say(f"    ecs-gitops running (log {self.daemon_log})")
        say(f"    status page:  {self.url}/")
        say(f"    status JSON:  {self.url}/api/v1/status")
        say(f"    metrics:      {self.url}/metrics")

    # ---- watching ------------------------------------------------------------------------

    def env(self, name):
        return self.daemon.env(name)

    def watch(self, name, until, what):
        """Narrates `name`'s phase changes until `until(env)` holds."""
        deadline = time.time() + STEP_TIMEOUT
        last = None
        while time.time() < deadline:
            e = self.env(name)
            if e is not None:
                key = (e["phase"], e["message"] if e["phase"] != "Baking" else "")
                if key != last:
                    say(f"      {name:<8} {e['phase']:<12} {e['message']}")
                    last = key
                if until(e):
                    return e
            time.sleep(0.25)
        raise DemoFailed(f"{what} did not happen within {STEP_TIMEOUT}s; see {self.daemon_log}")

    # ---- the story -----------------------------------------------------------------------

    def run(self):
        t0 = time.time()
        say("==> Starting the local AWS and creating what desired-state/ names")
        self.start_sim()
        files = self.create_world()
        health = self.start_health()
        self.make_repo(files, health)
        self.start_daemon()

        say("\n==> ecs-gitops adopts what runs now as the last good release of each environment")
        for env in ("staging", "prod"):
            self.watch(env, lambda e: e["phase"] == "InSync" and e["last_good_release"] == self.initial,
                       f"{env} adopting {self.initial[:7]}")

        say(f"\n==> CI pushed image {GOOD[:7]} and commits it to staging")
        rev = self.commit_release("staging", GOOD, f"staging: release {GOOD[:7]}")
        say(f"    commit {rev}: desired-state/staging.yaml release {GOOD[:7]}")
        e = self.watch("staging", lambda e: e["phase"] == "InSync" and e["last_good_release"] == GOOD,
                       f"staging verifying {GOOD[:7]}")
        if e["running_release"] != GOOD:
            raise DemoFailed("staging does not run the verified release")
        say(f"    staging verified {GOOD[:7]}: it is the new last good release")
        runs = self.hook_runs("staging")
        if runs.get(("migrate", "pre_deploy", "succeeded"), 0) < 1 or runs.get(("smoke", "verify", "succeeded"), 0) < 1:
            raise DemoFailed(f"the migration and the smoke test did not both run: {runs}")
        tasks = self.sim.control("tasks")
        migrate = next(t for t in tasks if t.get("startedBy") == f"ecs-gitops/staging/migrate/{GOOD[:7]}")
        say(f"    the migration (alembic upgrade head) ran as task {migrate['taskArn'].rsplit('/', 1)[-1][:12]} "
            f"and exited {migrate['containers'][0]['exitCode']} before any service was updated;")
        say("    the smoke test (pytest -m smoke) passed and /staging/backend logged no ERROR during the bake")

        say(f"\n==> Promoting {GOOD[:7]} to prod (prod only takes what staging verified)")
        rev = self.promote()
        say(f"    commit {rev}: desired-state/prod.yaml release {GOOD[:7]}")
        self.watch("prod", lambda e: e["phase"] == "InSync" and e["last_good_release"] == GOOD,
                   f"prod verifying {GOOD[:7]}")
        say(f"    prod verified {GOOD[:7]}")

        say(f"\n==> A bad release: {BAD[:7]} goes to staging, and its 5xx alarm fires during the bake")
        rev = self.commit_release("staging", BAD, f"staging: release {BAD[:7]}")
        say(f"    commit {rev}: desired-state/staging.yaml release {BAD[:7]}")
        self.watch("staging", lambda e: e["phase"] == "Baking", f"staging baking {BAD[:7]}")
        say("    firing alarm saas-staging-5xx")
        self.cw.set_alarm_state(AlarmName="saas-staging-5xx", StateValue="ALARM", StateReason="demo: 5xx spike")
        e = self.watch("staging", lambda e: e["phase"] == "Rejected", "the automatic rollback")
        if e["rejected_release"] != BAD or e["rejected_reason"] != "alarm" or e["running_release"] != GOOD:
            raise DemoFailed(f"unexpected state after the rollback: {e}")
        say(f"    rolled back to last good {GOOD[:7]}; {BAD[:7]} is rejected (reason: alarm)")
        self.cw.set_alarm_state(AlarmName="saas-staging-5xx", StateValue="OK", StateReason="demo: recovered")
        passes = e["passes"]
        self.watch("staging", lambda e: e["passes"] >= passes + 2, "two more passes")
        e = self.env("staging")
        if e["phase"] != "Rejected" or e["running_release"] != GOOD:
            raise DemoFailed("the rejected release was retried")
        say(f"    the alarm cleared, and {BAD[:7]} is still held as rejected until git names another release")

        say("\n==> Where things stand (ecs-gitops status)")
        out = subprocess.run([simkit.BINARY, "status", "--url", self.url],
                             capture_output=True, text=True)
        say(out.stdout.rstrip())
        metrics = urllib.request.urlopen(self.url + "/metrics", timeout=5).read().decode()
        for line in metrics.splitlines():
            if line.startswith(("ecs_gitops_rollbacks_total{environment=\"staging\",reason=\"alarm\"}",
                                "ecs_gitops_deployments_total")) and not line.endswith(" 0"):
                say("    " + line)
        say(f"\nDone in {time.time() - t0:.0f}s: a deploy, a promotion and an automatic rollback.")

    def hook_runs(self, env):
        """(hook, kind, result) -> count, from the daemon's metrics."""
        metrics = urllib.request.urlopen(self.url + "/metrics", timeout=5).read().decode()
        out = {}
        for m in re.finditer(r'ecs_gitops_hook_runs_total\{environment="' + env +
                             r'",hook="([^"]+)",kind="([^"]+)",result="([^"]+)"\} (\d+)', metrics):
            out[(m.group(1), m.group(2), m.group(3))] = int(m.group(4))
        return out

    def promote(self):
        env = dict(self.sim.env(REGION), **simkit.GIT_ENV)
        out = subprocess.run([simkit.BINARY, "promote", "--from", "staging", "--to", "prod", "--repo", self.repo.path],
                             capture_output=True, text=True, env=env)
        if out.returncode != 0:
            raise DemoFailed("ecs-gitops promote failed: " + out.stderr.strip())
        say("    $ ecs-gitops promote --from staging --to prod")
        for line in out.stdout.strip().splitlines():
            say("    " + line)
        return self.repo.git("rev-parse", "--short", "HEAD")

    def cleanup(self):
        for p in (self.daemon, self.sim):
            if p is not None:
                p.stop()
        if self.health:
            self.health.shutdown()
        shutil.rmtree(self.tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description="ecs-gitops demo")
    ap.add_argument("--keep", action="store_true", help="leave the daemon and the simulator running")
    ap.add_argument("--port", type=int, default=0, help="port of the daemon's HTTP server (default: a free one)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    demo = Demo(args)
    code = 1
    try:
        demo.run()
        code = 0
        if args.keep:
            say(f"\n--keep: the daemon ({demo.url}) and the simulator ({demo.sim.url}) keep running; Ctrl-C stops them.")
            while True:
                time.sleep(3600)
    except DemoFailed as e:
        say(f"\nDEMO FAILED: {e}")
    except KeyboardInterrupt:
        say("\ninterrupted; stopping everything the demo started")
        code = 130 if code else 0
    finally:
        demo.cleanup()
    sys.exit(code)


if __name__ == "__main__":
    main()
