#!/usr/bin/env python3
"""The provisioning benchmark's baseline: what an operator runs today to add N nodes to a
KubeVirt-on-MAAS cluster, written with python-libmaas the way a competent operator would.

For each of the N nodes, concurrently (python-libmaas is asyncio-native: one event loop, one task
per node, the library's async API; no threads for MAAS):

1. allocate a machine with the constraints (tags, minimum CPU count), waiting while none is free;
2. deploy it with the cluster-join user data and wait (`machine.deploy(wait=True)`, which polls the
   machine every `--poll` seconds until it leaves Deploying);
3. on Failed deployment: release it with a quick erase (not waiting for the erase) and go back to
   1, up to `--failure-budget` failed deployments for that node;
4. once Deployed: wait for the Kubernetes Node named after the machine to be Ready (the Python
   `kubernetes` client reading the Node every `--poll` seconds; `kubectl wait` cannot wait for a
   Node that does not exist yet).

python-libmaas does not retry anything: a 503 (or any error) of any call raises `CallError`, also
from inside `deploy(wait=True)`'s polling, which then abandons the wait. So every call goes through
`retrying`, a plain sleep-and-retry on 503, 409 with Retry-After, 502, 504 and connection errors
(sleeping what Retry-After says, else `--retry-sleep`), and a deploy whose wait was interrupted is
resumed by reading the machine and polling it until it leaves Deploying.

Output: one JSON object per line on stdout: `{"event": "started"}` once the imports are done,
one `{"event": "node", ...}` per node as it ends (hostname, whether its Node is Ready, every
attempt, failed deployments, error), then `{"event": "done", ...}`. Exits 0 when it ran to the
end (whatever the nodes did), 2 on a usage error.

Run by `cargo bench --bench provision` against the lab with the times scaled; by hand:
    python3 benches/provision_baseline.py --maas-url http://127.0.0.1:PORT/MAAS/ \
        --api-key consumer:token:secret --kubeconfig lab.kubeconfig --count 3 --tag vmo-worker
"""

import argparse
import asyncio
import json
import sys
import time

import aiohttp
from maas.client import connect
from maas.client.bones import CallError
from maas.client.enum import NodeStatus
from maas.client.viscera.machines import FailedDeployment, MachineNotFound
import kubernetes

# What an operator's script retries: MAAS unavailable (503), a 409 that asks to come back
# (Retry-After: serialization retries exhausted), a proxy's 502 or 504.
RETRYABLE = {502, 503, 504}


def emit(obj):
    print(json.dumps(obj), flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--maas-url", required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--tag", action="append", default=[], help="required tag (repeatable)")
    p.add_argument("--cpus", type=int, default=None, help="minimum CPU count")
    p.add_argument("--failure-budget", type=int, default=3,
                   help="failed deployments tolerated per node before giving it up")
    p.add_argument("--poll", type=float, default=5.0,
                   help="seconds between polls of a deploying machine and of a joining Node")
    p.add_argument("--retry-sleep", type=float, default=10.0,
                   help="seconds to sleep before retrying a failed call without Retry-After")
    p.add_argument("--retries", type=int, default=30, help="tries of one call in all")
    p.add_argument("--allocate-timeout", type=float, default=900.0,
                   help="seconds to wait for a free machine")
    p.add_argument("--ready-timeout", type=float, default=900.0,
                   help="seconds from Deployed until the Node must be Ready")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds for the whole run")
    p.add_argument("--join-command", default="kubeadm join 10.0.0.1:6443 --token abc.def "
                   "--discovery-token-ca-cert-hash sha256:00")
    return p.parse_args(argv)


def retry_after(error, default):
    """Seconds the server asked to wait, else `default`."""
    try:
        value = error.response.headers.get("Retry-After")
        return float(value) if value is not None else default
    except (AttributeError, ValueError):
        return default


class Counter:
    """Retries the script made, by cause (reported in the summary)."""

    def __init__(self):
        self.by_status = {}

    def note(self, key):
        self.by_status[key] = self.by_status.get(key, 0) + 1


async def retrying(args, counter, what, call):
    """`await call()`, sleeping and calling again after a retryable failure."""
    for attempt in range(1, args.retries + 1):
        try:
            return await call()
        except CallError as e:
            if e.status not in RETRYABLE and not (e.status == 409 and "Retry-After" in e.response.headers):
                raise
            if attempt == args.retries:
                raise
            counter.note(str(e.status))
            await asyncio.sleep(retry_after(e, args.retry_sleep))
        except (aiohttp.ClientError, asyncio.TimeoutError):
            if attempt == args.retries:
                raise
            counter.note("connection")
            await asyncio.sleep(args.retry_sleep)
    raise RuntimeError(f"{what}: out of retries")


async def allocate(args, client, counter, index, deadline):
    """A machine matching the constraints, waiting while none is free."""
    while True:
        try:
            return await retrying(args, counter, "allocate", lambda: client.machines.allocate(
                tags=args.tag or None, cpus=args.cpus, agent_name=f"baseline-{index}",
                comment=f"baseline node {index}"))
        except MachineNotFound:
            # MAAS's 409 "No machine available": wait for one to be released.
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(args.poll)


async def deploy_and_wait(args, client, counter, machine, user_data):
    """True when the machine deployed, False on Failed deployment."""
    while True:
        if machine.status == NodeStatus.ALLOCATED:
            try:
                await machine.deploy(user_data=user_data, wait=True, wait_interval=args.poll)
                return True
            except FailedDeployment:
                return False
            except CallError as e:
                # The deploy call itself, or one of the wait's polls, failed: read the machine and
                # carry on from where it is (deploy again only if it is still Allocated).
                if e.status not in RETRYABLE:
                    raise
                counter.note(f"{e.status} during deploy")
                await asyncio.sleep(retry_after(e, args.retry_sleep))
        elif machine.status == NodeStatus.DEPLOYING:
            await asyncio.sleep(args.poll)
        elif machine.status == NodeStatus.DEPLOYED:
            return True
        elif machine.status == NodeStatus.FAILED_DEPLOYMENT:
            return False
        else:
            raise RuntimeError(f"{machine.hostname} is {machine.status_name}, not deploying")
        system_id = machine.system_id
        machine = await retrying(args, counter, "read machine",
                                 lambda: client.machines.get(system_id=system_id))


def node_ready(core, name):
    try:
        node = core.read_node(name)
    except kubernetes.client.exceptions.ApiException as e:
        if e.status == 404:
            return False
        raise
    return any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))


async def wait_ready(args, core, hostname):
    deadline = time.monotonic() + args.ready_timeout
    while time.monotonic() < deadline:
        try:
            if await asyncio.to_thread(node_ready, core, hostname):
                return True
        except (kubernetes.client.exceptions.ApiException, OSError):
            pass
        await asyncio.sleep(args.poll)
    return False


async def provision(args, client, core, counter, index, user_data):
    attempts = []
    failed = 0
    result = {"event": "node", "index": index, "hostname": None, "ready": False,
              "attempts": attempts, "failed_deployments": 0, "error": None}
    try:
        while True:
            deadline = time.monotonic() + args.allocate_timeout
            machine = await allocate(args, client, counter, index, deadline)
            attempt = {"system_id": machine.system_id, "hostname": machine.hostname,
                       "allocated_at": time.time(), "deployed": False}
            attempts.append(attempt)
            deployed = await deploy_and_wait(args, client, counter, machine, user_data)
            attempt["ended_at"] = time.time()
            if deployed:
                attempt["deployed"] = True
                break
            failed += 1
            result["failed_deployments"] = failed
            # Give it back with a quick erase, without waiting for the erase.
            await retrying(args, counter, "release", lambda: machine.release(
                erase=True, quick_erase=True, comment=f"baseline node {index}: failed deployment"))
            if failed > args.failure_budget:
                result["error"] = f"{failed} failed deployments, over the budget of {args.failure_budget}"
                return result
        result["hostname"] = machine.hostname
        result["ready"] = await wait_ready(args, core, machine.hostname)
        if not result["ready"]:
            result["error"] = f"node {machine.hostname} not Ready within {args.ready_timeout} s"
    except Exception as e:  # noqa: BLE001 - the operator's script reports and goes on
        result["error"] = f"{type(e).__name__}: {e}"
    return result


async def run(args):
    counter = Counter()
    kube = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=args.kubeconfig, client_configuration=kube)
    kube.connection_pool_maxsize = max(4, args.count)
    core = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(kube))
    emit({"event": "started"})
    client = await retrying(args, counter, "connect",
                            lambda: connect(args.maas_url, apikey=args.api_key))
    user_data = ("#cloud-config\nruncmd:\n  - " + args.join_command + "\n").encode()

    async def one(i):
        r = await provision(args, client, core, counter, i, user_data)
        emit(r)
        return r

    tasks = [asyncio.ensure_future(one(i)) for i in range(args.count)]
    done, pending = await asyncio.wait(tasks, timeout=args.timeout)
    for t in pending:
        t.cancel()
    results = [t.result() for t in done if not t.cancelled() and t.exception() is None]
    emit({"event": "done", "ready": sum(1 for r in results if r["ready"]), "asked": args.count,
          "timed_out": len(pending), "retries": counter.by_status})


def main(argv):
    args = parse_args(argv)
    if args.count < 1 or args.poll <= 0:
        print("--count must be at least 1 and --poll positive", file=sys.stderr)
        return 2
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
