"""Fills moto's ECS cluster `mesh` for the ACL controller's scale benchmark: TOTAL tasks, of
which STOPPED are then stopped, and prints {"running": [ids], "stopped": [ids]}.

Arguments: ENDPOINT CREDS_JSON SUBNET SECURITY_GROUP TOTAL STOPPED. moto's RunTask starts at
most 10 tasks per call; the tasks carry the mesh-task module's tag `berth/mesh=true`.
"""
import json
import sys

from moto_common import client

endpoint, creds, subnet, sg = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
total, stopped = int(sys.argv[5]), int(sys.argv[6])

ecs = client(endpoint, "ecs", creds)
ecs.register_task_definition(
    family="bench",
    networkMode="awsvpc",
    requiresCompatibilities=["FARGATE"],
    cpu="256",
    memory="512",
    containerDefinitions=[{"name": "app", "image": "x", "memoryReservation": 64}],
)
arns = []
while len(arns) < total:
    r = ecs.run_task(
        cluster="mesh",
        taskDefinition="bench",
        count=min(10, total - len(arns)),
        launchType="FARGATE",
        networkConfiguration={"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [sg]}},
        tags=[{"key": "berth/mesh", "value": "true"}],
    )
    arns += [t["taskArn"] for t in r["tasks"]]
for a in arns[:stopped]:
    ecs.stop_task(cluster="mesh", task=a, reason="benchmark")
ids = [a.rsplit("/", 1)[1] for a in arns]
print(json.dumps({"stopped": ids[:stopped], "running": ids[stopped:]}))
