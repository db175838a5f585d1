"""EC2 instances for the cloud auto-join suite, in a moto server whose administrator exists:
a VPC and subnet on loopback addresses (NET.0/24, NET being e.g. 127.213.7), three running
instances tagged berth-cluster=TAG at NET.1-3 (where the suite's servers listen), one tagged
with another value at NET.5 and one with the tag but terminated at NET.6, neither of which
may be joined.

Arguments: ENDPOINT ADMIN_CREDS_JSON NET TAG. Prints {"servers": [ips], "decoys": [ips]}.
"""
import json
import sys

from moto_common import client

endpoint, creds, net, tag = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
ec2 = client(endpoint, "ec2", creds)
vpc = ec2.create_vpc(CidrBlock=f"{net}.0/24")["Vpc"]["VpcId"]
subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=f"{net}.0/24")["Subnet"]["SubnetId"]
ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]


def run(ip, value):
    r = ec2.run_instances(
        ImageId=ami,
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet,
        PrivateIpAddress=ip,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "berth-cluster", "Value": value}]}],
    )
    return r["Instances"][0]["InstanceId"]


servers = [f"{net}.{i}" for i in (1, 2, 3)]
for ip in servers:
    run(ip, tag)
run(f"{net}.5", tag + "-other")
gone = run(f"{net}.6", tag)
ec2.terminate_instances(InstanceIds=[gone])
print(json.dumps({"servers": servers, "decoys": [f"{net}.5", f"{net}.6"]}))
