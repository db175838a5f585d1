"""Prepares a moto server (started with INITIAL_NO_AUTH_ACTION_COUNT=3) for the task
lifecycle suites and the demo, and prints what they need as one JSON object.

The first three calls make an administrator with an access key; everything after is signed
with it, so moto checks SigV4 from then on. Each service gets a task role at /berth/ tagged
berth.service-name=<service> that the administrator (standing in for ECS) may assume and that
may read itself (iam:GetRole), as Consul on ECS requires. A VPC, subnet and security group are
made because moto's RunTask for awsvpc tasks needs them. `<service>-task` holds credentials
of a session of that service's role.
"""
import json
import sys

from moto_common import admin_trust, client as _client, make_admin

endpoint = sys.argv[1]
services = sys.argv[2:] or ["web", "api"]


def client(service, creds=None):
    return _client(endpoint, service, creds)


admin = make_admin(endpoint)

iam = client("iam", admin)
trust = admin_trust()
roles = {}
# `rogue` is a task role outside /berth/: its logins must be refused.
for name, path in [(s, "/berth/") for s in services] + [("rogue", "/other/")]:
    role = iam.create_role(
        RoleName=f"{name}-task",
        Path=path,
        AssumeRolePolicyDocument=trust,
        Tags=[{"Key": "berth.service-name", "Value": name}],
    )["Role"]
    iam.put_role_policy(
        RoleName=f"{name}-task",
        PolicyName="self",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": ["iam:GetRole"], "Resource": role["Arn"]},
                    {"Effect": "Allow", "Action": ["sts:GetCallerIdentity"], "Resource": "*"},
                ],
            }
        ),
    )
    roles[name] = role["Arn"]

# A session of each service's task role, for logins made outside a task (as a task of
# another cluster would make them).
sts = client("sts", admin)
sessions = {
    f"{name}-task": {
        k: v
        for k, v in sts.assume_role(RoleArn=arn, RoleSessionName=f"{name}-outside")["Credentials"].items()
        if k in ("AccessKeyId", "SecretAccessKey", "SessionToken")
    }
    for name, arn in roles.items()
}

ec2 = client("ec2", admin)
vpc = ec2.create_vpc(CidrBlock="10.200.0.0/16")["Vpc"]["VpcId"]
ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.200.1.0/24")["Subnet"]["SubnetId"]
sg = ec2.create_security_group(GroupName="berth-tasks", Description="berth tasks", VpcId=vpc)["GroupId"]
# The cluster tasks register in when the suite asks berth-ecs-local to (the ACL controller
# must find it before the first task runs).
client("ecs", admin).create_cluster(clusterName="mesh")
print(json.dumps({"admin": admin, "roles": roles, "subnet": subnet, "security_group": sg, **sessions}))
