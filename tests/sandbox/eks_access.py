"""EKS access entries and Pod Identity associations for the sandbox's moto, which answers both with 404.

nodesmith's default `setup` (`--node-access access-entry`, and `--identity pod-identity`) and its teardown call
them; shaped as the EKS API reference documents them, kept in memory per account, region and cluster, and gone
with their cluster. Served through moto's own EKS response class (its REST routing names the operation from the
botocore model), so requests are signed, parsed and recorded (iam_recorder.py) like every other.
"""

import datetime
import threading
import uuid

from moto.core.responses import ActionResult
from moto.eks import urls
from moto.eks.exceptions import InvalidParameterException, ResourceInUseException, ResourceNotFoundException
from moto.eks.responses import EKSResponse

_lock = threading.Lock()
# (account, region, cluster) -> {principal ARN -> entry}
_entries: dict = {}
# (account, region, cluster) -> {association id -> association}
_associations: dict = {}


def _not_found(message):
    return ResourceNotFoundException(
        clusterName=None, nodegroupName=None, fargateProfileName=None, addonName=None, message=message
    )


def _cluster(response):
    name = response._get_param("clusterName") or response._get_param("name")
    cluster = response.eks_backend.describe_cluster(name=name)  # 404 for a cluster that does not exist
    return (response.current_account, response.region, name), cluster


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def create_access_entry(self):
    key, cluster = _cluster(self)
    principal = self._get_param("principalArn")
    entry_type = self._get_param("type") or "STANDARD"
    if entry_type not in ("STANDARD", "EC2_LINUX", "EC2_WINDOWS", "FARGATE_LINUX", "EC2", "HYBRID_LINUX"):
        raise InvalidParameterException(
            clusterName=key[2], nodegroupName=None, fargateProfileName=None, addonName=None,
            message=f"The type {entry_type} is not valid.",
        )
    with _lock:
        entries = _entries.setdefault(key, {})
        if principal in entries:
            raise ResourceInUseException(
                clusterName=key[2], nodegroupName=None, addonName=None,
                message=f"The specified access entry resource is already in use on this cluster.",
            )
        entry = {
            "clusterName": key[2],
            "principalArn": principal,
            "kubernetesGroups": self._get_param("kubernetesGroups") or [],
            "accessEntryArn": f"{cluster.arn.replace(':cluster/', ':access-entry/')}/role/{uuid.uuid4()}",
            "createdAt": _now(),
            "modifiedAt": _now(),
            "tags": self._get_param("tags") or {},
            "username": self._get_param("username") or f"arn:aws:sts::{key[0]}:assumed-role/{{{{SessionName}}}}",
            "type": entry_type,
        }
        entries[principal] = entry
    return ActionResult({"accessEntry": entry})


def _entry(self):
    key, _ = _cluster(self)
    principal = self._get_param("principalArn")
    entry = _entries.get(key, {}).get(principal)
    if entry is None:
        raise _not_found(f"The specified access entry resource {principal} could not be found on the cluster.")
    return key, principal, entry


def describe_access_entry(self):
    _, _, entry = _entry(self)
    return ActionResult({"accessEntry": entry})


def delete_access_entry(self):
    key, principal, _ = _entry(self)
    with _lock:
        _entries.get(key, {}).pop(principal, None)
    return ActionResult({})


def list_access_entries(self):
    key, _ = _cluster(self)
    return ActionResult({"accessEntries": sorted(_entries.get(key, {}))})


def create_pod_identity_association(self):
    key, cluster = _cluster(self)
    namespace, account = self._get_param("namespace"), self._get_param("serviceAccount")
    with _lock:
        associations = _associations.setdefault(key, {})
        if any(a["namespace"] == namespace and a["serviceAccount"] == account for a in associations.values()):
            raise ResourceInUseException(
                clusterName=key[2], nodegroupName=None, addonName=None,
                message="Association already exists for this service account.",
            )
        association_id = "a-" + uuid.uuid4().hex[:17]
        association = {
            "clusterName": key[2],
            "namespace": namespace,
            "serviceAccount": account,
            "roleArn": self._get_param("roleArn"),
            "associationArn": f"{cluster.arn.replace(':cluster/', ':podidentityassociation/')}/{association_id}",
            "associationId": association_id,
            "tags": self._get_param("tags") or {},
            "createdAt": _now(),
            "modifiedAt": _now(),
        }
        associations[association_id] = association
    return ActionResult({"association": association})


def _association(self):
    key, _ = _cluster(self)
    association_id = self._get_param("associationId")
    association = _associations.get(key, {}).get(association_id)
    if association is None:
        raise _not_found(f"Association {association_id} not found.")
    return key, association_id, association


def describe_pod_identity_association(self):
    _, _, association = _association(self)
    return ActionResult({"association": association})


def delete_pod_identity_association(self):
    key, association_id, association = _association(self)
    with _lock:
        _associations.get(key, {}).pop(association_id, None)
    return ActionResult({"association": association})


def list_pod_identity_associations(self):
    key, _ = _cluster(self)
    namespace, account = self._get_param("namespace"), self._get_param("serviceAccount")
    summaries = [
        {k: a[k] for k in ("clusterName", "namespace", "serviceAccount", "associationArn", "associationId")}
        for a in _associations.get(key, {}).values()
        if (not namespace or a["namespace"] == namespace) and (not account or a["serviceAccount"] == account)
    ]
    return ActionResult({"associations": summaries})


def install():
    for name, handler in {
        "create_access_entry": create_access_entry,
        "describe_access_entry": describe_access_entry,
        "delete_access_entry": delete_access_entry,
        "list_access_entries": list_access_entries,
        "create_pod_identity_association": create_pod_identity_association,
        "describe_pod_identity_association": describe_pod_identity_association,
        "delete_pod_identity_association": delete_pod_identity_association,
        "list_pod_identity_associations": list_pod_identity_associations,
    }.items():
        setattr(EKSResponse, name, handler)
    dispatch = urls.response.dispatch
    urls.url_paths.update({
        "{0}/clusters/(?P<name>[^/]+)/access-entries$": dispatch,
        "{0}/clusters/(?P<name>[^/]+)/access-entries/(?P<principalArn>.+)$": dispatch,
        "{0}/clusters/(?P<name>[^/]+)/pod-identity-associations$": dispatch,
        "{0}/clusters/(?P<name>[^/]+)/pod-identity-associations/(?P<associationId>[^/]+)$": dispatch,
    })
