"""moto's server, plus the public SSM parameters AWS publishes for the EKS-optimized AMIs, and EKS clusters whose
endpoint is the sandbox's real API server.

moto ships none of the parameters and refuses PutParameter under /aws/service/, so EC2NodeClass AMI aliases
(al2023@latest, al2@latest, bottlerocket@latest) could not resolve in the sandbox. They are put straight into
moto's SSM backend before it serves, pointing at AMIs moto does serve.

moto gives every cluster a made-up endpoint and CA. With SANDBOX_APISERVER_URL (and SANDBOX_CA_FILE) set, a new
cluster reports the sandbox's API server and CA instead, as EKS reports its own: a kubeconfig for the sandbox
then points at "the cluster's endpoint", which is what nodesmith checks before it changes anything in Kubernetes.
EKS access entries and Pod Identity associations, which moto does not serve, are served by eks_access.py.

moto gives every EKS cluster the same OIDC issuer; on AWS each cluster has its own, and setup and teardown rely on
it (a provider is one cluster's). Each cluster gets a random issuer id here.

moto answers DescribeLaunchTemplates with the first MaxResults templates (15 by default) and no NextToken; AWS
pages. The sandbox pages as AWS does, so that a caller that does not follow NextToken misses templates here too.

moto's EventBridge drops the envelope's "account" on the way into an SQS target (its input templating keeps the
other fields); AWS always sends it, and the controller refuses an event from another account, so it is put back.

moto ignores CreateFleet's ClientToken; AWS makes a retried request with the same token return the fleet it
already made (and refuses one with the same token and other parameters with IdempotentParameterMismatch). The
controller relies on that to never launch twice for one NodeClaim, so the sandbox does it too.

moto gives an instance's primary network interface DeleteOnTermination=false and so keeps it (and its subnet
address) after the instance is terminated; on AWS the interface made at launch goes with the instance, a few
seconds after it. The sandbox releases it the same way, a little later, so that deleting a subnet just emptied
of instances works as it does on AWS only once the interfaces are gone.

moto reads one resource's tags by scanning every tag of every resource (describe_tags with a resource-id filter,
copying the whole tag map each time), so DescribeInstances with a tag filter costs instances x tags: at 770
instances it took longer than the SDK's 30 s timeout and the sandbox stopped registering Nodes. The sandbox reads
the resource's own entry of the same map instead; the answer is the same.

moto has no prices: the Pricing API and realistic spot prices are served by aws_prices.py.

With SANDBOX_IAM_LOG set, every request signed by an assumed role is recorded with what AWS would authorize it as
(iam_recorder.py), for the IAM evaluation of the tests.
Arguments are moto_server's.
"""

import base64
import datetime
import os
import secrets
import sys
import threading

from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.responses.fleets import Fleets
from moto.ec2.models.core import TaggedEC2Resource
from moto.ec2.models.instances import Instance
from moto.ec2.responses.launch_templates import LaunchTemplates
from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix
from moto.eks.models import Cluster
from moto.events.models import Rule
from moto.server import main
from moto.ssm.models import Parameter, ssm_backends

import aws_prices
import eks_access
import iam_recorder

REGION = os.environ.get("SANDBOX_REGION", "us-east-1")
KUBERNETES_VERSIONS = ["1.32", "1.33", "1.34", "1.35", "1.36"]
# AL2023 images moto serves (DescribeImages), one per architecture.
IMAGES = {"x86_64": "ami-03c3da4cfa8e8943a", "arm64": "ami-08a311a6aaa3cd94a"}


def eks_ami_parameters():
    for version in KUBERNETES_VERSIONS:
        for arch, image in IMAGES.items():
            yield f"/aws/service/eks/optimized-ami/{version}/amazon-linux-2023/{arch}/standard/recommended/image_id", image
            # The NVIDIA variant, for GPU instance types (the same moto image: moto boots nothing).
            yield f"/aws/service/eks/optimized-ami/{version}/amazon-linux-2023/{arch}/nvidia/recommended/image_id", image
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


def give_every_cluster_its_own_issuer():
    original_init = Cluster.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        issuer = self.identity["oidc"]["issuer"]
        self.identity = {"oidc": {"issuer": issuer.rsplit("/id/", 1)[0] + "/id/" + secrets.token_hex(16).upper()}}

    Cluster.__init__ = init


def page_launch_templates():
    def describe_launch_templates(self):
        max_results = self._get_int_param("MaxResults", 200)
        token = self._get_param("NextToken")
        start = int(token) if token and str(token).isdigit() else 0
        templates = self.ec2_backend.describe_launch_templates(
            template_names=self._get_param("LaunchTemplateNames", []),
            template_ids=self._get_param("LaunchTemplateIds", []),
            filters=self._filters_from_querystring(),
        )
        self.error_on_dryrun()
        page = templates[start : start + max_results]
        result = {
            "LaunchTemplates": [
                {
                    "CreateTime": template.create_time,
                    "CreatedBy": f"arn:{self.partition}:iam::{self.current_account}:root",
                    "DefaultVersionNumber": template.default_version_number,
                    "LatestVersionNumber": template.latest_version_number,
                    "LaunchTemplateId": template.id,
                    "LaunchTemplateName": template.name,
                    "Tags": template.tags,
                }
                for template in page
            ]
        }
        if start + max_results < len(templates):
            result["NextToken"] = str(start + max_results)
        return ActionResult(result)

    LaunchTemplates.describe_launch_templates = describe_launch_templates


def honour_create_fleet_client_tokens():
    original = Fleets.create_fleet
    made = {}  # (account, region, token) -> (the request without its token, the answer)

    def create_fleet(self):
        token = self._get_param("ClientToken")
        if not token:
            return original(self)
        key = (self.current_account, self.region, token)
        request = sorted((k, v) for k, v in self.querystring.items() if k not in ("ClientToken", "Action"))
        if key in made:
            earlier, answer = made[key]
            if earlier != request:
                raise EC2ClientError(
                    "IdempotentParameterMismatch",
                    f"The client token {token} was used with other parameters in an earlier request.",
                )
            return answer
        answer = original(self)
        made[key] = (request, answer)
        return answer

    Fleets.create_fleet = create_fleet


INTERFACE_RELEASE_SECONDS = 3.0


def release_primary_interfaces_after_termination():
    original = Instance.terminate

    def terminate(self):
        made_at_launch = [
            nic
            for nic in self.nics.values()
            if nic.device_index == 0 and not nic.delete_on_termination and nic.description == "Primary network interface"
        ]
        state = original(self)

        def release():
            for nic in made_at_launch:
                if nic.id in self.ec2_backend.enis:
                    try:
                        nic.delete()
                    except Exception as error:  # released some other way meanwhile
                        print(f"sandbox: could not release {nic.id}: {error}", file=sys.stderr)

        threading.Timer(INTERFACE_RELEASE_SECONDS, release).start()
        return state

    Instance.terminate = terminate


def look_up_tags_by_resource():
    def get_tags(self):
        if not self.id:
            return []
        kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(self.id), "")
        # .get: the backend's map is a defaultdict, and reading must not add an entry.
        tags = self.ec2_backend.tags.get(self.id, {})
        return [{"resource_id": self.id, "key": k, "value": v, "resource_type": kind} for k, v in tags.items()]

    TaggedEC2Resource.get_tags = get_tags


def keep_the_account_in_events_sent_to_sqs():
    original = Rule._send_to_sqs_queue

    def send(self, resource_id, event, group_id=None):
        event.setdefault("account", self.account_id)
        return original(self, resource_id, event, group_id)

    Rule._send_to_sqs_queue = send


def serve_the_sandbox_api_server_as_cluster_endpoint():
    endpoint = os.environ.get("SANDBOX_APISERVER_URL")
    ca_file = os.environ.get("SANDBOX_CA_FILE")
    if not endpoint:
        return
    original_init = Cluster.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.endpoint = endpoint
        if ca_file:
            with open(ca_file, "rb") as ca:
                self.certificate_authority = {"data": base64.b64encode(ca.read()).decode()}

    Cluster.__init__ = init


if __name__ == "__main__":
    seed_parameters()
    serve_the_sandbox_api_server_as_cluster_endpoint()
    give_every_cluster_its_own_issuer()
    keep_the_account_in_events_sent_to_sqs()
    page_launch_templates()
    look_up_tags_by_resource()
    honour_create_fleet_client_tokens()
    release_primary_interfaces_after_termination()
    eks_access.install()
    aws_prices.install()
    iam_recorder.install()
    sys.exit(main(sys.argv[1:]))
