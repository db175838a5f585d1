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

import boto3

endpoint = sys.argv[1]
ACCOUNT = "123456789012"


def client(service, creds=None):
    kw = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    if creds:
        kw.update(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds.get("SessionToken"),
        )
    else:
        kw.update(aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
    return boto3.client(service, **kw)


iam0 = client("iam")
iam0.create_user(UserName="admin")
iam0.put_user_policy(
    UserName="admin",
    PolicyName="all",
    PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
)
key = iam0.create_access_key(UserName="admin")["AccessKey"]
admin = {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}

iam = client("iam", admin)
sts = client("sts", admin)
trust = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/admin"}, "Action": "sts:AssumeRole"}
        ],
    }
)
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
