"""Shared pieces of scripts/demo.py and scripts/bench.py: the simulator process, AWS clients
on it, a desired-state git repository, and the ecs-gitops daemon. Run with the simulator's
virtualenv python (it has boto3)."""

import json
import os
import socket
import subprocess
import urllib.request

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The daemon the scripts run (tests point it at the binary cargo built for them).
BINARY = os.environ.get("ECS_GITOPS_BINARY") or os.path.join(ROOT, "target", "debug", "ecs-gitops")
ACCOUNT = "123456789012"
MANIFEST = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7023,
               "digest": "sha256:" + "a" * 64},
    "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 32654,
                "digest": "sha256:" + "b" * 64}]})
GIT_ENV = {"GIT_AUTHOR_NAME": "ecs-gitops", "GIT_AUTHOR_EMAIL": "ecs-gitops@example.invalid",
           "GIT_COMMITTER_NAME": "ecs-gitops", "GIT_COMMITTER_EMAIL": "ecs-gitops@example.invalid"}


class Failed(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def post_json(url, body, timeout=5):
    req = urllib.request.Request(url, method="POST", data=json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


class Sim:
    """The simulator on a free port; `stop()` ends it."""

    def __init__(self, log_path):
        python = os.path.join(ROOT, ".aws-sim", "venv", "bin", "python")
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([python, os.path.join(ROOT, "scripts", "aws_sim", "sim.py"), "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            raise Failed("the simulator did not start; see " + log_path)

    def control(self, path, body=None, timeout=5):
        if body is None:
            return get_json(f"{self.url}/_sim/{path}", timeout)
        return post_json(f"{self.url}/_sim/{path}", body, timeout)

    def reset_calls(self):
        """Forgets the calls counted and logged so far."""
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/_sim/calls", method="DELETE"), timeout=60).read()

    def client(self, name, region):
        return boto3.client(name, endpoint_url=self.url, region_name=region,
                            aws_access_key_id="test", aws_secret_access_key="test")

    def env(self, region):
        """Environment for a process that should use the simulator."""
        return dict(os.environ, AWS_ENDPOINT_URL=self.url, AWS_ACCESS_KEY_ID="test",
                    AWS_SECRET_ACCESS_KEY="test", AWS_REGION=region, AWS_EC2_METADATA_DISABLED="true",
                    AWS_CONFIG_FILE="/nonexistent", AWS_SHARED_CREDENTIALS_FILE="/nonexistent")

    def stop(self):
        stop(self.proc)


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def proc_status_kib(pid, field):
    """A kB figure of /proc/PID/status (VmRSS, VmHWM); 0 when absent."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def put_images(ecr, repository, tags):
    try:
        ecr.create_repository(repositoryName=repository)
    except ecr.exceptions.RepositoryAlreadyExistsException:
        pass
    for tag in tags:
        ecr.put_image(repositoryName=repository, imageTag=tag, imageManifest=MANIFEST)


def put_alarm(cw, name):
    """A target 5xx alarm, as the desired-state files' `verify.alarms` name them (state OK)."""
    cw.put_metric_alarm(AlarmName=name, MetricName="HTTPCode_Target_5XX_Count",
                        Namespace="AWS/ApplicationELB", Statistic="Sum", Period=60,
                        EvaluationPeriods=1, Threshold=5.0, ComparisonOperator="GreaterThanThreshold")


def create_service(ecs, cluster, name, family, image, desired=2):
    td = ecs.register_task_definition(
        family=family, cpu="256", memory="512",
        containerDefinitions=[{"name": "app", "image": image, "essential": True,
                               "environment": [{"name": "ROLE", "value": name}]}],
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=td, desiredCount=desired)
    return td


def image_uri(region, repository, tag):
    return f"{ACCOUNT}.dkr.ecr.{region}.amazonaws.com/{repository}:{tag}"


class Repo:
    """A desired-state git repository made with the git CLI."""

    def __init__(self, path):
        self.path = path
        os.makedirs(os.path.join(path, "desired-state"))
        self.git("init", "--quiet", "--initial-branch=main")

    def git(self, *args):
        out = subprocess.run(["git", "-C", self.path, *args], env=dict(os.environ, **GIT_ENV),
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise Failed(f"git {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout.strip()

    def file(self, env):
        return os.path.join(self.path, "desired-state", f"{env}.yaml")

    def write(self, env, text):
        with open(self.file(env), "w") as f:
            f.write(text)

    def read(self, env):
        with open(self.file(env)) as f:
            return f.read()

    def commit(self, message):
        self.git("add", "-A")
        self.git("commit", "--quiet", "-m", message)
        return self.git("rev-parse", "HEAD")


class Daemon:
    """`ecs-gitops run` on a free port (or `port`), logging to `log_path`."""

    def __init__(self, repo, sim_env, log_path, interval="2s", port=0, extra=()):
        env = dict(sim_env)
        env.setdefault("RUST_LOG", "info")
        self.log_path = log_path
        log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [BINARY, "run", "--repo", repo, "--listen", f"127.0.0.1:{port or free_port()}", "--interval", interval, *extra],
            stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        line = self.proc.stdout.readline().strip()
        if "listening on" not in line:
            raise Failed("ecs-gitops did not start; see " + log_path)
        self.url = line.rsplit(" ", 1)[1]

    def status(self):
        return get_json(self.url + "/api/v1/status", 60)

    def env(self, name):
        for e in self.status()["environments"]:
            if e["name"] == name:
                return e
        return None

    def metrics(self):
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
            return r.read().decode()

    def rss_kib(self):
        return proc_status_kib(self.proc.pid, "VmRSS")

    def stop(self):
        stop(self.proc)
