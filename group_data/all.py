"""Defaults for every host in every inventory (the lowest precedence a data file has).

Only keys someone defines may appear here: component settings (DEFAULTS in deploys/components/*.py),
inventory keys (spectra_cli/schema.py) or pyinfra connector/global-argument keys. `spectra validate`
rejects anything else, naming this file and the key. Precedence: group_data/README.md.
"""

# kubeadm stacked etcd: every control_plane host also has the etcd role. Use "external" for dedicated
# etcd hosts (then they must not be control_plane or workers).
etcd_topology = "stacked"

# Cloud hosts can take a moment to accept SSH after boot.
ssh_connect_retries = 2
