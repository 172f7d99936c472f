"""Settings for production hosts (group `env_prod`: hosts whose env is "prod").

Environment groups sit just above the inventory-file group and below region, zone and role groups.

A production host may not be open to anywhere: `spectra validate` and every deploy refuse SSH, the API
server or the NodePorts open to 0.0.0.0/0 or ::/0 (the firewall's defaults) here, unless
`firewall_exposure_allowed` records why. Below, all three let in private networks only (RFC 1918 and IPv6
unique local addresses): the sites' own address space, where the nodes, the deploy's controller or bastion
and the load balancers are. Narrow them further to your admin networks; keep every node's address
(`node_address`) inside `firewall_apiserver_cidrs`, since kubelets reach the API server through it.
"""

firewall_admin_cidrs = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8"]
firewall_apiserver_cidrs = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8"]
firewall_nodeport_cidrs = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8"]
