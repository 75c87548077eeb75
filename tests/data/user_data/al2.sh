#!/bin/bash -xe
exec > >(tee /var/log/user-data.log | logger -t user-data -s 2>/dev/console) 2>&1
/etc/eks/bootstrap.sh 'demo' \
  --apiserver-endpoint 'https://ABCD.gr7.us-east-1.eks.amazonaws.com' \
  --b64-cluster-ca 'Q0EK' \
  --dns-cluster-ip '10.100.0.10' \
  --use-max-pods false \
  --local-disks raid0 \
  --kubelet-extra-args '--node-labels=karpenter.sh/nodepool=default,team=it'\''s-ours --max-pods=110 --register-with-taints=dedicated=gpu:NoSchedule'
