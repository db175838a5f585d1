"""What the moto setup scripts share: clients for one endpoint, and the administrator that
the first three (unauthenticated) calls of a moto started with INITIAL_NO_AUTH_ACTION_COUNT=3
create; every later call is signed with its key, so moto checks SigV4 from then on."""
import json

import boto3

ACCOUNT = "123456789012"


def client(endpoint, service, creds=None):
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


def make_admin(endpoint):
    iam0 = client(endpoint, "iam")
    iam0.create_user(UserName="admin")
    iam0.put_user_policy(
        UserName="admin",
        PolicyName="all",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
    )
    key = iam0.create_access_key(UserName="admin")["AccessKey"]
    return {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}


def admin_trust():
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/admin"}, "Action": "sts:AssumeRole"}
            ],
        }
    )
