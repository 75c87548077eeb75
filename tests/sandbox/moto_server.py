"""moto's server, plus the public SSM parameters AWS publishes for the EKS-optimized AMIs.

moto ships none of them and refuses PutParameter under /aws/service/, so EC2NodeClass AMI aliases
(al2023@latest, al2@latest, bottlerocket@latest) could not resolve in the sandbox. They are put straight into
moto's SSM backend before it serves, pointing at AMIs moto does serve. Arguments are moto_server's.
"""

import datetime
import os
import sys

from moto.core import DEFAULT_ACCOUNT_ID
from moto.server import main
from moto.ssm.models import Parameter, ssm_backends

REGION = os.environ.get("SANDBOX_REGION", "us-east-1")
KUBERNETES_VERSIONS = ["1.32", "1.33", "1.34", "1.35", "1.36"]
# AL2023 images moto serves (DescribeImages), one per architecture.
IMAGES = {"x86_64": "ami-03c3da4cfa8e8943a", "arm64": "ami-08a311a6aaa3cd94a"}


def eks_ami_parameters():
    for version in KUBERNETES_VERSIONS:
        for arch, image in IMAGES.items():
            yield f"/aws/service/eks/optimized-ami/{version}/amazon-linux-2023/{arch}/standard/recommended/image_id", image
            suffix = "-arm64" if arch == "arm64" else ""
            yield f"/aws/service/eks/optimized-ami/{version}/amazon-linux-2{suffix}/recommended/image_id", image
            yield f"/aws/service/bottlerocket/aws-k8s-{version}/{arch}/latest/image_id", image


def seed_parameters():
    parameters = ssm_backends[DEFAULT_ACCOUNT_ID][REGION]._parameters
    now = datetime.datetime.now(datetime.timezone.utc)
    for name, value in eks_ami_parameters():
        # dict.__getitem__ of the defaultdict: the backend's own lookup would try to lazy-load moto's files.
        parameters[name].append(
            Parameter(
                account_id=DEFAULT_ACCOUNT_ID,
                name=name,
                value=value,
                parameter_type="String",
                description=None,
                allowed_pattern=None,
                keyid=None,
                last_modified_date=now,
                version=1,
                data_type="aws:ec2:image",
            )
        )


if __name__ == "__main__":
    seed_parameters()
    sys.exit(main(sys.argv[1:]))
