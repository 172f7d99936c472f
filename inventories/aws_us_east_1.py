r"""AWS us-east-1: the running instances of one cluster, found by tag (see inventories/sources/ec2.py).

    spectra deploy inventories/aws_us_east_1.py deploy.py
    SPECTRA_CLUSTER=staging SPECTRA_BASTION=admin@bastion.example.com spectra validate \
        inventories/aws_us_east_1.py

Tag instances ``spectra:cluster=<cluster>`` and ``spectra:roles=control_plane,etcd`` (or ``workers``,
``monitoring``...); optionally ``spectra:env=prod`` and ``Team=<team>``. Copy this file for another
region (``aws_eu_west_1.py``): the group names stay the same, only the zones differ.
"""

from inventories import ssh_tuning
from inventories.grouping import build_groups, file_group
from inventories.sources.ec2 import Ec2Source, KeyedGroup, ec2_records

ssh_tuning.enable()  # loaded before pyinfra connects: TCP_NODELAY, ~2 ms per remote command instead of ~44 ms

_source = Ec2Source.from_env(
    region="us-east-1",
    cluster="prod",
    keyed_groups=(KeyedGroup("tags.Team", prefix="team"),),
)

globals().update(build_groups(ec2_records(_source), inventory_group=file_group(__file__)))
