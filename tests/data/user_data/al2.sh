MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="//"

--//
Content-Type: text/x-shellscript; charset="us-ascii"

#!/bin/bash -xe
exec > >(tee /var/log/user-data.log | logger -t user-data -s 2>/dev/console) 2>&1
/etc/eks/bootstrap.sh 'demo' \
  --apiserver-endpoint 'https://ABCD.gr7.us-east-1.eks.amazonaws.com' \
  --b64-cluster-ca 'Q0EK' \
  --dns-cluster-ip '10.100.0.10' \
  --use-max-pods false \
  --local-disks raid0 \
  --kubelet-extra-args '--node-labels=karpenter.sh/nodepool=default,team=it'\''s-ours --max-pods=110 --register-with-taints=dedicated=gpu:NoSchedule --kube-reserved=cpu=250m,memory=1Gi --system-reserved=memory=200Mi --eviction-hard=memory.available<5% --eviction-soft=memory.available<10% --eviction-soft-grace-period=memory.available=1m30s --eviction-max-pod-grace-period=60 --image-gc-high-threshold=85 --image-gc-low-threshold=80 --cpu-cfs-quota=false'
--//--
