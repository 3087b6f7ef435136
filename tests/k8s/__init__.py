"""Tests on a real Kubernetes control plane on loopback (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler) with kwok's fake nodes; `make test-k8s`."""
