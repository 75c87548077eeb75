"""Records what AWS would authorize for every request a role makes to the sandbox's moto, so that the policies setup
wrote can be evaluated against it (tests/sandbox/iam/evaluate.mjs, with a real condition-aware evaluator).

moto authorizes nothing: it ignores conditions and resources. This hooks moto's own authorization point
(BaseResponse._authenticate_and_authorize_normal_action, called before every action runs), where the request is
parsed and moto's state is still as AWS would see it when deciding (a launch template about to be deleted still
has its tags). For a request signed with credentials of an assumed role, one JSON line is appended to
SANDBOX_IAM_LOG:

  {"principal": role ARN, "operation": "ec2:CreateFleet", "policies": <id>, "authorizations": [
     {"action": "ec2:RunInstances", "resource": ARN, "context": {"aws:RequestTag/k": "v", ...}}, ...]}

with the role's policies (managed policies' default versions and inline policies) written once per distinct set as
{"policy_set": <id>, "documents": [...]}. What a request is authorized as follows AWS's service authorization
reference; where it depends on what AWS does (tags of a launch template's TagSpecifications count as request tags
of the resources a launch creates, as Karpenter's published policy relies on), the model is noted beside it. An
operation this file does not know is recorded as such, and the evaluation fails on it: nothing goes unchecked.
Requests signed with other credentials (the tests' own, setup's, teardown's) are not recorded.
"""

import hashlib
import json
import os
import threading

from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.responses import BaseResponse

LOG_PATH = os.environ.get("SANDBOX_IAM_LOG")
_lock = threading.Lock()
_written_policy_sets: set[str] = set()

# Resources an EC2 launch creates, beside the instance.
LAUNCH_CREATES = ["instance", "volume", "network-interface"]
# How a resource about to be created is named in the request evaluated (AWS matches it against "<type>/*").
NEW_RESOURCE_IDS = {
    "instance": "i-00000000000000000",
    "volume": "vol-00000000000000000",
    "network-interface": "eni-00000000000000000",
    "spot-instances-request": "sir-00000000",
}
# The resource types ec2:CreateFleet is authorized on (the service authorization reference); a launch is also
# authorized as ec2:RunInstances on every resource it uses or creates.
CREATE_FLEET_TYPES = {"capacity-reservation", "fleet", "image", "instance", "launch-template", "placement-group",
                      "subnet", "volume"}


def install():
    if not LOG_PATH:
        return
    original = BaseResponse._authenticate_and_authorize_normal_action

    def authorize(self, resource="*"):
        try:
            record(self)
        except Exception as error:  # never break moto; say so in the log, where the evaluation sees it
            write({"error": f"{type(error).__name__}: {error}", "operation": operation_name(self)})
        return original(self, resource)

    BaseResponse._authenticate_and_authorize_normal_action = authorize


def write(entry):
    line = json.dumps(entry, sort_keys=True)
    with _lock:
        with open(LOG_PATH, "a", encoding="utf-8") as log:
            log.write(line + "\n")


def operation_name(response):
    return f"{response.service_name}:{response._get_action()}"


def record(response):
    role_arn, session = role_of(response.get_access_key())
    operation = operation_name(response)
    if role_arn is None:
        return
    account = response.current_account
    region = response.region
    context = {"aws:RequestedRegion": region, "aws:PrincipalArn": role_arn, "aws:PrincipalAccount": account}
    mapper = MAPPERS.get(operation)
    entry = {
        "principal": role_arn,
        "credential": response.get_access_key(),
        "session": session,
        "operation": operation,
        "region": region,
        "account": account,
    }
    if mapper is None:
        entry["unmapped"] = True
        entry["authorizations"] = []
    else:
        authorizations = mapper(Request(response, account, region))
        for authorization in authorizations:
            authorization["context"] = {**context, **authorization.get("context", {})}
        entry["authorizations"] = authorizations
    entry["policies"] = policy_set(role_arn)
    write(entry)


def role_of(access_key):
    """The role and session name of credentials from sts:AssumeRole, or (None, None)."""
    from moto.sts.models import sts_backends

    assumed = sts_backends[DEFAULT_ACCOUNT_ID]["aws"].get_assumed_role_from_access_key(access_key)
    if assumed is None:
        return None, None
    return assumed.role_arn, assumed.session_name


def policy_set(role_arn):
    """The role's policies as they are now, written to the log once per distinct set; returns the set's id."""
    from moto.iam.models import iam_backends

    iam = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    try:
        role = iam.get_role_by_arn(role_arn)
    except Exception:
        documents = []
    else:
        documents = []
        for arn, policy in sorted(role.managed_policies.items()):
            default = next((v for v in policy.versions if v.is_default), None)
            if default is not None:
                documents.append({"name": arn, "document": json.loads(default.document)})
        for name, document in sorted(role.policies.items()):
            documents.append({"name": f"inline:{name}", "document": json.loads(document)})
    text = json.dumps(documents, sort_keys=True)
    identity = hashlib.sha256(text.encode()).hexdigest()[:16]
    with _lock:
        first = identity not in _written_policy_sets
        _written_policy_sets.add(identity)
    if first:
        write({"policy_set": identity, "role": role_arn, "documents": documents})
    return identity


class Request:
    """A parsed request and the moto state it is authorized against."""

    def __init__(self, response, account, region):
        self.response = response
        self.account = account
        self.region = region

    def param(self, name, default=None):
        value = self.response._get_param(name, default)
        return default if value is None else value

    def ec2_arn(self, kind, identifier="*"):
        if kind == "image":
            return f"arn:aws:ec2:{self.region}::image/{identifier}"
        return f"arn:aws:ec2:{self.region}:{self.account}:{kind}/{identifier}"

    def ec2(self):
        from moto.ec2.models import ec2_backends

        return ec2_backends[self.account][self.region]

    def ec2_tags(self, resource_id):
        return dict(self.ec2().tags.get(resource_id, {}))

    def iam(self):
        from moto.iam.models import iam_backends

        return iam_backends[self.account]["aws"]


def resource_tags(tags):
    return {f"aws:ResourceTag/{k}": v for k, v in tags.items()}


def request_tags(tags):
    context = {f"aws:RequestTag/{k}": v for k, v in tags.items()}
    if tags:
        context["aws:TagKeys"] = sorted(tags)
    return context


def tag_dict(tags):
    """Tags as moto or a request gives them: a list of {Key, Value}, or a dict."""
    if isinstance(tags, dict):
        return {k: (v.get("Value") if isinstance(v, dict) else v) for k, v in tags.items()}
    return {t.get("Key"): t.get("Value", "") for t in tags or [] if t.get("Key") is not None}


def tag_specifications(specifications):
    """{resource type: {key: value}} from a TagSpecifications list."""
    by_type = {}
    for spec in specifications or []:
        by_type.setdefault(spec.get("ResourceType"), {}).update(tag_dict(spec.get("Tags") or spec.get("Tag") or []))
    return by_type


def anything(action):
    return lambda request: [{"action": action, "resource": "*"}]


# ------------------------------------------------------------------------------------------------------------ EC2


def create_launch_template(request):
    tags = tag_specifications(request.param("TagSpecifications", [])).get("launch-template", {})
    resource = request.ec2_arn("launch-template", "lt-00000000000000000")
    authorizations = [{"action": "ec2:CreateLaunchTemplate", "resource": resource, "context": request_tags(tags)}]
    if tags:
        # Tagging on create is authorized as ec2:CreateTags with the creating action named.
        context = {**request_tags(tags), "ec2:CreateAction": "CreateLaunchTemplate"}
        authorizations.append({"action": "ec2:CreateTags", "resource": resource, "context": context})
    return authorizations


def launch_template_of(request, spec):
    backend = request.ec2()
    template_id = spec.get("LaunchTemplateId")
    if not template_id and spec.get("LaunchTemplateName"):
        template_id = backend.launch_template_name_to_ids.get(spec["LaunchTemplateName"])
    return backend.launch_templates.get(template_id) if template_id else None


def create_fleet(request):
    configs = request.param("LaunchTemplateConfigs", [])
    capacity = request.param("TargetCapacitySpecification", {}).get("DefaultTargetCapacityType", "on-demand")
    fleet_tags = tag_specifications(request.param("TagSpecifications", []))
    authorizations = []

    def allow(actions, resource, context=None):
        for action in actions:
            authorizations.append({"action": action, "resource": resource, "context": context or {}})

    def launch(kind):
        return ["ec2:CreateFleet", "ec2:RunInstances"] if kind in CREATE_FLEET_TYPES else ["ec2:RunInstances"]

    allow(["ec2:CreateFleet"], request.ec2_arn("fleet", "fleet-00000000-0000-0000-0000-000000000000"),
          request_tags(fleet_tags.get("fleet", {})))
    template_tags = {}
    for config in configs:
        template = launch_template_of(request, config.get("LaunchTemplateSpecification", {}))
        if template is None:
            continue
        allow(launch("launch-template"), request.ec2_arn("launch-template", template.id), resource_tags(request.ec2_tags(template.id)))
        version = template.default_version()
        data = version.data or {}
        template_tags = tag_specifications(data.get("TagSpecifications", []))
        if version.image_id:
            allow(launch("image"), request.ec2_arn("image", version.image_id), resource_tags(request.ec2_tags(version.image_id)))
        groups = list(data.get("SecurityGroupIds") or []) + list(data.get("SecurityGroups") or [])
        for interface in data.get("NetworkInterfaces") or []:
            groups += list(interface.get("Groups") or [])
        for group in groups:
            allow(launch("security-group"), request.ec2_arn("security-group", group), resource_tags(request.ec2_tags(group)))
        profile = data.get("IamInstanceProfile") or {}
        for role in roles_of_profile(request, profile):
            # Launching with an instance profile passes its role to EC2.
            authorizations.append({
                "action": "iam:PassRole",
                "resource": role,
                "context": {"iam:PassedToService": "ec2.amazonaws.com"},
            })
        for override in config.get("Overrides") or []:
            if override.get("SubnetId"):
                subnet = override["SubnetId"]
                allow(launch("subnet"), request.ec2_arn("subnet", subnet), resource_tags(request.ec2_tags(subnet)))
    created = LAUNCH_CREATES + (["spot-instances-request"] if capacity == "spot" else [])
    for kind in created:
        # Model: the tags a resource is created with are the fleet's TagSpecifications for its type and the launch
        # template's for its type (how a template's network-interface tags satisfy aws:RequestTag conditions).
        tags = {**template_tags.get(kind, {}), **fleet_tags.get(kind, {})}
        resource = request.ec2_arn(kind, NEW_RESOURCE_IDS[kind])
        allow(launch(kind), resource, request_tags(tags))
        if tags:
            allow(["ec2:CreateTags"], resource, {**request_tags(tags), "ec2:CreateAction": "CreateFleet"})
    return authorizations


def roles_of_profile(request, profile):
    iam = request.iam()
    name = profile.get("Name") or (profile.get("Arn") or "").rsplit("/", 1)[-1]
    found = iam.instance_profiles.get(name) if name else None
    return [role.arn for role in (found.roles if found else [])]


def terminate_instances(request):
    ids = request.param("InstanceIds", [])
    return [
        {"action": "ec2:TerminateInstances", "resource": request.ec2_arn("instance", i),
         "context": resource_tags(request.ec2_tags(i))}
        for i in ids
    ]


def delete_launch_template(request):
    template = launch_template_of(request, {
        "LaunchTemplateId": request.param("LaunchTemplateId"),
        "LaunchTemplateName": request.param("LaunchTemplateName"),
    })
    identifier = template.id if template else (request.param("LaunchTemplateId") or "lt-00000000000000000")
    return [{"action": "ec2:DeleteLaunchTemplate", "resource": request.ec2_arn("launch-template", identifier),
             "context": resource_tags(request.ec2_tags(identifier))}]


EC2_ID_KINDS = {"i": "instance", "lt": "launch-template", "vol": "volume", "eni": "network-interface",
                "subnet": "subnet", "sg": "security-group", "vpc": "vpc", "rtb": "route-table"}


def ec2_tagging(action):
    def mapper(request):
        tags = tag_dict(request.param("Tags", []))
        authorizations = []
        for resource_id in request.param("Resources", []):
            kind = EC2_ID_KINDS.get(resource_id.split("-")[0], "unknown")
            context = resource_tags(request.ec2_tags(resource_id))
            # CreateTags is authorized with the tags it sets; DeleteTags with the keys it removes.
            context.update(request_tags(tags) if action == "ec2:CreateTags" else {"aws:TagKeys": sorted(tags)})
            authorizations.append({"action": action, "resource": request.ec2_arn(kind, resource_id),
                                   "context": context})
        return authorizations

    return mapper


create_tags = ec2_tagging("ec2:CreateTags")


def create_subnet(request):
    tags = tag_specifications(request.param("TagSpecifications", [])).get("subnet", {})
    return [
        {"action": "ec2:CreateSubnet", "resource": request.ec2_arn("subnet"), "context": request_tags(tags)},
        {"action": "ec2:CreateSubnet", "resource": request.ec2_arn("vpc", request.param("VpcId"))},
    ]


def delete_subnet(request):
    subnet = request.param("SubnetId")
    return [{"action": "ec2:DeleteSubnet", "resource": request.ec2_arn("subnet", subnet),
             "context": resource_tags(request.ec2_tags(subnet))}]


def associate_route_table(request):
    return [
        {"action": "ec2:AssociateRouteTable", "resource": request.ec2_arn("route-table", request.param("RouteTableId"))},
        {"action": "ec2:AssociateRouteTable", "resource": request.ec2_arn("subnet", request.param("SubnetId"))},
    ]


# ------------------------------------------------------------------------------------------------------------ IAM


def profile_arn(request, name):
    return f"arn:aws:iam::{request.account}:instance-profile/{name}"


def existing_profile_tags(request, name):
    found = request.iam().instance_profiles.get(name)
    return tag_dict(found.tags) if found else {}


def instance_profile_action(action, with_request_tags=False):
    def mapper(request):
        name = request.param("InstanceProfileName")
        context = resource_tags(existing_profile_tags(request, name))
        if with_request_tags:
            context = {**context, **request_tags(tag_dict(request.param("Tags", [])))}
        authorizations = [{"action": action, "resource": profile_arn(request, name), "context": context}]
        if action == "iam:AddRoleToInstanceProfile":
            role = request.param("RoleName")
            authorizations.append({
                "action": "iam:PassRole",
                "resource": f"arn:aws:iam::{request.account}:role/{role}",
                "context": {"iam:PassedToService": "ec2.amazonaws.com"},
            })
        return authorizations

    return mapper


def create_instance_profile(request):
    name = request.param("InstanceProfileName")
    tags = tag_dict(request.param("Tags", []))
    return [{"action": "iam:CreateInstanceProfile", "resource": profile_arn(request, name),
             "context": request_tags(tags)}]


def list_instance_profiles_for_role(request):
    role = request.param("RoleName")
    return [{"action": "iam:ListInstanceProfilesForRole",
             "resource": f"arn:aws:iam::{request.account}:role/{role}"}]


# ---------------------------------------------------------------------------------------------- SQS, SSM, EKS


def queue_arn_from_url(request, url):
    parts = (url or "").rstrip("/").split("/")
    account, name = (parts[-2], parts[-1]) if len(parts) >= 2 else (request.account, "")
    return f"arn:aws:sqs:{request.region}:{account}:{name}"


def sqs(action):
    def mapper(request):
        return [{"action": action, "resource": queue_arn_from_url(request, request.param("QueueUrl"))}]

    return mapper


def get_queue_url(request):
    owner = request.param("QueueOwnerAWSAccountId") or request.account
    return [{"action": "sqs:GetQueueUrl",
             "resource": f"arn:aws:sqs:{request.region}:{owner}:{request.param('QueueName')}"}]


def ssm_parameter_arn(request, name):
    # AWS's public parameters have no account in their ARN.
    account = "" if name.startswith("/aws/service/") else request.account
    return f"arn:aws:ssm:{request.region}:{account}:parameter{name if name.startswith('/') else '/' + name}"


def get_parameter(request):
    return [{"action": "ssm:GetParameter", "resource": ssm_parameter_arn(request, request.param("Name"))}]


def get_parameters(request):
    return [{"action": "ssm:GetParameters", "resource": ssm_parameter_arn(request, name)}
            for name in request.param("Names", [])]


def iam_arn(request, resource):
    return f"arn:aws:iam::{request.account}:{resource}"


def iam_role(action):
    return lambda request: [{"action": action, "resource": iam_arn(request, f"role/{request.param('RoleName')}")}]


def iam_policy(action):
    return lambda request: [{"action": action, "resource": request.param("PolicyArn")}]


def create_policy(request):
    tags = tag_dict(request.param("Tags", []))
    return [{"action": "iam:CreatePolicy", "resource": iam_arn(request, f"policy/{request.param('PolicyName')}"),
             "context": request_tags(tags)}]


def create_role(request):
    tags = tag_dict(request.param("Tags", []))
    return [{"action": "iam:CreateRole", "resource": iam_arn(request, f"role/{request.param('RoleName')}"),
             "context": request_tags(tags)}]


def attach_role_policy(action):
    def mapper(request):
        return [{"action": action, "resource": iam_arn(request, f"role/{request.param('RoleName')}"),
                 "context": {"iam:PolicyARN": request.param("PolicyArn")}}]

    return mapper


def create_oidc_provider(request):
    host_path = (request.param("Url") or "").removeprefix("https://")
    tags = tag_dict(request.param("Tags", []))
    return [{"action": "iam:CreateOpenIDConnectProvider", "resource": iam_arn(request, f"oidc-provider/{host_path}"),
             "context": request_tags(tags)}]


def oidc_provider(action):
    return lambda request: [{"action": action, "resource": request.param("OpenIDConnectProviderArn")}]


def create_service_linked_role(request):
    service = request.param("AWSServiceName")
    return [{"action": "iam:CreateServiceLinkedRole",
             "resource": iam_arn(request, f"role/aws-service-role/{service}/*"),
             "context": {"iam:AWSServiceName": service}}]


def create_queue(request):
    name = request.param("QueueName")
    return [{"action": "sqs:CreateQueue", "resource": f"arn:aws:sqs:{request.region}:{request.account}:{name}"}]


def rule_arn(request, name):
    return f"arn:aws:events:{request.region}:{request.account}:rule/{name}"


def events_rule(action, parameter):
    def mapper(request):
        context = {}
        if action == "events:PutRule":
            context = request_tags(tag_dict(request.param("Tags", [])))
        return [{"action": action, "resource": rule_arn(request, request.param(parameter)), "context": context}]

    return mapper


def events_resource(action):
    return lambda request: [{"action": action, "resource": request.param("ResourceARN")}]


def eks_path(request):
    """/clusters/<cluster>/<collection>/<item>: the path's parts after `clusters`."""
    from urllib.parse import unquote

    parts = [unquote(p) for p in request.response.path.split("?", 1)[0].strip("/").split("/")]
    return parts[1:] if parts and parts[0] == "clusters" else parts


def eks_cluster_arn(request, cluster):
    return f"arn:aws:eks:{request.region}:{request.account}:cluster/{cluster}"


def eks_on_cluster(action):
    def mapper(request):
        cluster = eks_path(request)[0]
        context = request_tags(tag_dict(request.param("tags") or {}))
        authorizations = [{"action": action, "resource": eks_cluster_arn(request, cluster), "context": context}]
        if action == "eks:CreatePodIdentityAssociation":
            authorizations.append({"action": "iam:PassRole", "resource": request.param("roleArn"),
                                   "context": {"iam:PassedToService": "pods.eks.amazonaws.com"}})
        return authorizations

    return mapper


def eks_item(action, kind):
    def mapper(request):
        parts = eks_path(request)
        cluster, item = parts[0], parts[-1]
        if kind == "access-entry":
            # EKS names an entry by its principal and an id it chose: access-entry/<cluster>/role/<account>/<name>/<id>
            # (moto keeps no id; any stands in).
            principal = item.split(":")
            account, name = principal[4], principal[-1].split("/")[-1]
            item = f"role/{account}/{name}/00000000-0000-0000-0000-000000000000"
        return [{"action": action,
                 "resource": f"arn:aws:eks:{request.region}:{request.account}:{kind}/{cluster}/{item}"}]

    return mapper


def describe_cluster(request):
    name = request.response.path.rstrip("/").rsplit("/", 1)[-1]
    return [{"action": "eks:DescribeCluster", "resource": f"arn:aws:eks:{request.region}:{request.account}:cluster/{name}"}]


MAPPERS = {
    "ec2:CreateLaunchTemplate": create_launch_template,
    "ec2:CreateFleet": create_fleet,
    "ec2:TerminateInstances": terminate_instances,
    "ec2:DeleteLaunchTemplate": delete_launch_template,
    "ec2:CreateTags": create_tags,
    "iam:CreateInstanceProfile": create_instance_profile,
    "iam:TagInstanceProfile": instance_profile_action("iam:TagInstanceProfile", with_request_tags=True),
    "iam:AddRoleToInstanceProfile": instance_profile_action("iam:AddRoleToInstanceProfile"),
    "iam:RemoveRoleFromInstanceProfile": instance_profile_action("iam:RemoveRoleFromInstanceProfile"),
    "iam:DeleteInstanceProfile": instance_profile_action("iam:DeleteInstanceProfile"),
    "iam:GetInstanceProfile": instance_profile_action("iam:GetInstanceProfile"),
    "iam:ListInstanceProfilesForRole": list_instance_profiles_for_role,
    "sqs:GetQueueUrl": get_queue_url,
    "sqs:ReceiveMessage": sqs("sqs:ReceiveMessage"),
    "sqs:DeleteMessage": sqs("sqs:DeleteMessage"),
    # A batch delete is authorized as sqs:DeleteMessage.
    "sqs:DeleteMessageBatch": sqs("sqs:DeleteMessage"),
    "ssm:GetParameter": get_parameter,
    "ssm:GetParameters": get_parameters,
    "eks:DescribeCluster": describe_cluster,
    # GetCallerIdentity needs no permission.
    "sts:GetCallerIdentity": lambda request: [],
}
for _read in [
    "DescribeAvailabilityZones", "DescribeImages", "DescribeInstances", "DescribeInstanceStatus",
    "DescribeInstanceTypeOfferings", "DescribeInstanceTypes", "DescribeLaunchTemplates", "DescribeSecurityGroups",
    "DescribeSpotPriceHistory", "DescribeSubnets",
]:
    MAPPERS[f"ec2:{_read}"] = anything(f"ec2:{_read}")
MAPPERS["pricing:GetProducts"] = anything("pricing:GetProducts")

# What setup and teardown call (as the operator).
MAPPERS.update({
    "ec2:DeleteTags": ec2_tagging("ec2:DeleteTags"),
    "ec2:CreateSubnet": create_subnet,
    "ec2:DeleteSubnet": delete_subnet,
    "ec2:AssociateRouteTable": associate_route_table,
    "iam:CreateRole": create_role,
    "iam:CreatePolicy": create_policy,
    "iam:AttachRolePolicy": attach_role_policy("iam:AttachRolePolicy"),
    "iam:DetachRolePolicy": attach_role_policy("iam:DetachRolePolicy"),
    "iam:CreateOpenIDConnectProvider": create_oidc_provider,
    "iam:CreateServiceLinkedRole": create_service_linked_role,
    "sqs:CreateQueue": create_queue,
    "events:PutRule": events_rule("events:PutRule", "Name"),
    "events:DescribeRule": events_rule("events:DescribeRule", "Name"),
    "events:DeleteRule": events_rule("events:DeleteRule", "Name"),
    "events:PutTargets": events_rule("events:PutTargets", "Rule"),
    "events:RemoveTargets": events_rule("events:RemoveTargets", "Rule"),
    "events:ListTargetsByRule": events_rule("events:ListTargetsByRule", "Rule"),
    "events:ListTagsForResource": events_resource("events:ListTagsForResource"),
    "events:TagResource": events_resource("events:TagResource"),
    "eks:CreateAccessEntry": eks_on_cluster("eks:CreateAccessEntry"),
    "eks:ListAccessEntries": eks_on_cluster("eks:ListAccessEntries"),
    "eks:CreatePodIdentityAssociation": eks_on_cluster("eks:CreatePodIdentityAssociation"),
    "eks:ListPodIdentityAssociations": eks_on_cluster("eks:ListPodIdentityAssociations"),
    "eks:DescribeAccessEntry": eks_item("eks:DescribeAccessEntry", "access-entry"),
    "eks:DeleteAccessEntry": eks_item("eks:DeleteAccessEntry", "access-entry"),
    "eks:DescribePodIdentityAssociation": eks_item("eks:DescribePodIdentityAssociation", "podidentityassociation"),
    "eks:DeletePodIdentityAssociation": eks_item("eks:DeletePodIdentityAssociation", "podidentityassociation"),
})
for _action in ["GetRole", "DeleteRole", "UpdateAssumeRolePolicy", "ListAttachedRolePolicies", "TagRole"]:
    MAPPERS[f"iam:{_action}"] = iam_role(f"iam:{_action}")
for _action in ["GetPolicy", "GetPolicyVersion", "ListPolicyVersions", "ListEntitiesForPolicy", "DeletePolicy",
                "DeletePolicyVersion", "CreatePolicyVersion", "TagPolicy"]:
    MAPPERS[f"iam:{_action}"] = iam_policy(f"iam:{_action}")
for _action in ["GetOpenIDConnectProvider", "ListOpenIDConnectProviderTags", "DeleteOpenIDConnectProvider",
                "TagOpenIDConnectProvider"]:
    MAPPERS[f"iam:{_action}"] = oidc_provider(f"iam:{_action}")
for _action in ["iam:ListRoles", "iam:ListInstanceProfiles", "iam:ListOpenIDConnectProviders",
                "ec2:DescribeVpcs", "ec2:DescribeRouteTables", "ec2:DescribeNetworkInterfaces"]:
    MAPPERS[_action] = anything(_action)
for _action in ["DeleteQueue", "GetQueueAttributes", "SetQueueAttributes", "ListQueueTags", "TagQueue"]:
    MAPPERS[f"sqs:{_action}"] = sqs(f"sqs:{_action}")
