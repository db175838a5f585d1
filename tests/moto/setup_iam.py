"""Prepares a moto server (started with INITIAL_NO_AUTH_ACTION_COUNT=3) for the aws-iam login
suites and prints the credentials they need as one JSON object.

The first three calls run unauthenticated and make an administrator with an access key; every
call after that is signed with the administrator's key, so moto checks SigV4 from then on.
Roles: `web` at path /berth/ tagged berth.service-name=web (bound by the tests' auth method),
and `outsider` at path /other/ with the same tag (outside the bound ARNs). Each is assumed
through STS, as an ECS task role is.
"""
import json
import sys

from moto_common import admin_trust, client as _client, make_admin

endpoint = sys.argv[1]


def client(service, creds=None):
    return _client(endpoint, service, creds)


admin = make_admin(endpoint)

iam = client("iam", admin)
sts = client("sts", admin)
trust = admin_trust()
out = {"admin": admin}
for name, path in [("web", "/berth/"), ("outsider", "/other/")]:
    role = iam.create_role(
        RoleName=name,
        Path=path,
        AssumeRolePolicyDocument=trust,
        Tags=[{"Key": "berth.service-name", "Value": "web"}],
    )["Role"]
    # A task role may read itself, as Consul on ECS requires for IAM entity details.
    iam.put_role_policy(
        RoleName=name,
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
    creds = sts.assume_role(RoleArn=role["Arn"], RoleSessionName=f"{name}-task")["Credentials"]
    out[name] = {
        "AccessKeyId": creds["AccessKeyId"],
        "SecretAccessKey": creds["SecretAccessKey"],
        "SessionToken": creds["SessionToken"],
        "RoleArn": role["Arn"],
    }
print(json.dumps(out))
